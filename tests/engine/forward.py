"""Test helpers: run a bare Transformer over a scratch paged KV pool (the engine's only forward path)."""
from __future__ import annotations

import torch

from engine.kv_pool import BlockPool
from engine.model_runner import forward_rows
from engine.step_plan import RowPlan

BLOCK_SIZE = 16


def scratch_pool(model, blocks: int = 64) -> BlockPool:
    a = model.args
    return BlockPool(a.n_layers, blocks, BLOCK_SIZE, a.n_kv_heads, a.head_dim, model.dtype, model.device)


def _tables(pool: BlockPool, rows: int, length: int) -> list[list[int]]:
    return [pool.allocate(pool.blocks_for(length)) for _ in range(rows)]


@torch.inference_mode()
def full_forward(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, vocab) of every row of `tokens` (B, T) read in one pass."""
    pool = scratch_pool(model)
    tables = _tables(pool, tokens.shape[0], tokens.shape[1])
    rows = [RowPlan(b, tokens[b].tolist(), 0, tables[b]) for b in range(tokens.shape[0])]
    return forward_rows(model, pool, rows, every_position=True)


@torch.inference_mode()
def incremental_forward(model, tokens: torch.Tensor, prefix: int) -> torch.Tensor:
    """The same logits, computed as a prefill of `prefix` tokens then one decode step per token."""
    pool = scratch_pool(model)
    tables = _tables(pool, tokens.shape[0], tokens.shape[1])
    B, T = tokens.shape
    first = forward_rows(model, pool, [RowPlan(b, tokens[b, :prefix].tolist(), 0, tables[b]) for b in range(B)],
                         every_position=True)
    steps = [forward_rows(model, pool, [RowPlan(b, [int(tokens[b, t])], t, tables[b]) for b in range(B)],
                          every_position=True) for t in range(prefix, T)]
    return torch.cat([first, *steps], dim=1)


@torch.inference_mode()
def padded_forward(model, rows: list[list[int]]) -> list[torch.Tensor]:
    """Rows of different lengths in one right-padded pass; each row's logits (its length, vocab)."""
    pool = scratch_pool(model)
    plans = [RowPlan(b, r, 0, pool.allocate(pool.blocks_for(len(r)))) for b, r in enumerate(rows)]
    logits = forward_rows(model, pool, plans, every_position=True)
    return [logits[b, :len(r)] for b, r in enumerate(rows)]
