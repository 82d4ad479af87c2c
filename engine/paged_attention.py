"""Attention over the paged KV pool, with the common prefix of a batch read once.

A batch row b holds T new tokens (right-padded) at positions start_b..start_b+t_b-1. Their keys
and values are written to the pool first, then each query attends to its row's slots.
When every row starts with the same cached blocks (the few-shot prompt all requests share),
those S keys are attended in one call for all queries of the batch, each row's own keys in a
second call, and the two partial results are merged by their log-sum-exp. That reads the shared
prefix once per layer instead of once per row. With a sliding window (Mistral-style, where a
file declares one) a query sees only the `window` most recent keys, itself included, and the
prefix is not split out.

A decode step (one new token per row) on the native kernels takes neither call: one kernel per layer
writes the new K/V and reads each row's keys in place through its block table
(kernels/cpu_attention.c; the flash path is its reference).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .activation_quant import fake_quantize, fp16_rounded_attention
from .kernels import cpu_matmul


@dataclass(frozen=True)
class DecodeTables:
    """A decode step for the native kernel: each row's block table and key count (its new token included)."""
    tables: torch.Tensor  # (B, width) int32, rows padded with block 0
    keys: torch.Tensor  # (B,) int32
    block_size: int
    window: int  # a query sees at most this many keys; 0: all
    shared: int  # keys of a prefix every row shares (PagedBatch.shared_slots), attended for all rows at once


@dataclass
class PagedBatch:
    """Where a batch's new tokens go in the pool and which slots each query may read."""
    k_pool: torch.Tensor  # (n_layers, slots, n_kv_heads, head_dim)
    v_pool: torch.Tensor
    write_slots: torch.Tensor | None  # (B * T,) slot of every new token; padding goes to scratch block 0
    own_slots: torch.Tensor | None  # (B, L) key slots after the shared prefix, per row; padding: slot 0
    own_bias: torch.Tensor | None  # (B, 1, groups * T, L) 0 where a query may look, -inf elsewhere, in the model dtype
    own_mask: torch.Tensor | None  # (B, 1, T, L) the same as booleans
    shared_slots: torch.Tensor | None  # (S,) slots of the prefix every row shares, or None
    own_start: int | None = None  # a single row whose own slots are consecutive: read them as a view
    exact: list[tuple[int, int]] | None = None  # batch-invariant mode: each row's (new tokens, keys)
    decode: DecodeTables | None = None  # set (and the slot tensors above None) for decode_attention

    @classmethod
    def build(cls, k_pool, v_pool, block_tables: list[list[int]], starts: list[int], lengths: list[int],
              shared_blocks: int, block_size: int, dtype: torch.dtype, groups: int, window: int = 0,
              batch_invariant: bool = False, native_decode: bool = False) -> PagedBatch:
        """starts[b]: tokens already cached in row b; lengths[b]: its new tokens; shared_blocks: common leading blocks;
        window: the sliding attention window (0: none); batch_invariant: attend row by row (see exact_attention);
        native_decode: the model attends by decode_attention when every row has one new token."""
        device = k_pool.device
        if native_decode and not batch_invariant and max(lengths) == 1:
            width = max(len(table) for table in block_tables)
            tables = torch.tensor([table + [0] * (width - len(table)) for table in block_tables], dtype=torch.int32)
            keys = torch.tensor([start + 1 for start in starts], dtype=torch.int32)
            shared = shared_blocks * block_size if not window else 0
            shared_slots = _prefix_slots(block_tables[0], shared_blocks, block_size) if shared else None
            return cls(k_pool, v_pool, None, None, None, None, shared_slots,
                       decode=DecodeTables(tables, keys, block_size, window, shared))
        if window or batch_invariant:
            shared_blocks = 0  # every query masks differently, or a row must not depend on its neighbours
        width = max(lengths)
        shared = shared_blocks * block_size
        own_len = max(s + n for s, n in zip(starts, lengths)) - shared
        write = torch.arange(width).repeat(len(starts), 1) % block_size  # scratch block 0 for padding
        own = torch.zeros(len(starts), own_len, dtype=torch.long)
        mask = torch.zeros(len(starts), 1, width, own_len, dtype=torch.bool)
        for b, (table, start, n) in enumerate(zip(block_tables, starts, lengths)):
            positions = torch.arange(shared, start + n)
            slots = torch.tensor(table)[positions // block_size] * block_size + positions % block_size
            own[b, :len(slots)] = slots
            write[b, :n] = slots[start - shared:]
            query_pos = torch.arange(start, start + n).unsqueeze(1)  # (n, 1)
            visible = positions.unsqueeze(0) <= query_pos
            if window:
                visible &= positions.unsqueeze(0) > query_pos - window
            mask[b, 0, :n, :len(slots)] = visible
            mask[b, 0, n:, 0] = True  # padded queries look at one slot so their softmax stays finite
        # the bias follows the grouped query layout of paged_attention: group-major, then T
        bias = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, float("-inf")).repeat(1, 1, groups, 1)
        shared_slots = _prefix_slots(block_tables[0], shared_blocks, block_size).to(device) if shared else None
        own_start = None
        if len(starts) == 1 and own_len and bool((own[0] == own[0, 0] + torch.arange(own_len)).all()):
            own_start = int(own[0, 0])
        exact = [(n, s + n) for s, n in zip(starts, lengths)] if batch_invariant else None
        return cls(k_pool, v_pool, write.flatten().to(device), own.to(device), bias.to(device), mask.to(device),
                   shared_slots, own_start, exact)

    def own_keys_values(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's own K and V, (B, Hkv, L, D): a view when they are consecutive, else one gather."""
        k_pool, v_pool = self.k_pool[layer], self.v_pool[layer]
        B, L = self.own_slots.shape
        if self.own_start is not None:
            k, v = k_pool[self.own_start:self.own_start + L], v_pool[self.own_start:self.own_start + L]
        else:
            flat = self.own_slots.flatten()
            k, v = k_pool.index_select(0, flat), v_pool.index_select(0, flat)
        return (k.view(B, L, *k.shape[1:]).transpose(1, 2), v.view(B, L, *v.shape[1:]).transpose(1, 2))


def _prefix_slots(table: list[int], blocks: int, block_size: int) -> torch.Tensor:
    """The pool slots of a block table's first `blocks` blocks, in position order."""
    offsets = torch.arange(blocks * block_size) % block_size
    return torch.tensor(table[:blocks]).repeat_interleave(block_size) * block_size + offsets


def decode_attention(qkv: torch.Tensor, n_heads: int, batch: PagedBatch, layer: int) -> torch.Tensor:
    """The native decode step: qkv (B, 1, n_heads + 2 n_kv_heads, head_dim) bf16, q and k rotated -> (B, 1, n_heads *
    head_dim), the new K/V written to the pool. A prefix the rows share is attended first for all of them in one
    flash call (a matrix product over its keys), the kernel continues from its result over each row's own keys.
    paged_attention is the reference."""
    B, _, heads, D = qkv.shape
    Hkv = (heads - n_heads) // 2
    d, k_pool, v_pool = batch.decode, batch.k_pool[layer], batch.v_pool[layer]
    prior = None
    if d.shared:  # grouped queries (B, Hkv, groups, D): a decode step's T is 1
        grouped = qkv[:, 0, :n_heads].reshape(B, Hkv, n_heads // Hkv, D)
        out, lse = _shared_prefix_attention(grouped, k_pool, v_pool, batch.shared_slots)
        prior = (d.shared, out.contiguous(), lse.float().contiguous())
    out = cpu_matmul.paged_decode_attention(qkv.view(B, heads, D), n_heads, Hkv, k_pool, v_pool, d.tables, d.keys,
                                            d.block_size, d.window, prior)
    return out.view(B, 1, -1)


def _shared_prefix_attention(grouped: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
                             shared_slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row's queries, grouped under their KV head (B, Hkv, groups * T, D), over the prefix all rows
    share, in one flash call (a matrix product over its keys): out (1, Hkv, B * groups * T, D) and its
    log-sum-exp (1, Hkv, B * groups * T), rows in order within each KV head."""
    B, Hkv, _, D = grouped.shape
    shared_k = k_pool.index_select(0, shared_slots).permute(1, 0, 2).unsqueeze(0)  # (1, Hkv, S, D)
    shared_v = v_pool.index_select(0, shared_slots).permute(1, 0, 2).unsqueeze(0)
    return _flash(grouped.transpose(0, 1).reshape(1, Hkv, -1, D), shared_k, shared_v)


def _flash(q, k, v, bias=None):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias)


def paged_attention(q, k, v, batch: PagedBatch, layer: int, fp16_rounding: bool) -> torch.Tensor:
    """q: (B, T, H, D); k, v: (B, T, Hkv, D) of the new tokens. Returns (B, T, H * D)."""
    B, T, H, D = q.shape
    Hkv = k.shape[2]
    groups = H // Hkv
    k_pool, v_pool = batch.k_pool[layer], batch.v_pool[layer]
    if fp16_rounding:
        k, v = fake_quantize(k, "F16"), fake_quantize(v, "F16")
    k_pool.index_copy_(0, batch.write_slots, k.reshape(B * T, Hkv, D).to(k_pool.dtype))
    v_pool.index_copy_(0, batch.write_slots, v.reshape(B * T, Hkv, D).to(v_pool.dtype))
    own_k, own_v = batch.own_keys_values(layer)  # (B, Hkv, L, D)
    if batch.exact is not None:
        return exact_attention(q, own_k, own_v, batch)
    if fp16_rounding or q.device.type != "cpu":  # reference math (llama.cpp's rounding) or non-CPU: one plain pass
        return _plain_attention(q, own_k, own_v, batch, layer, fp16_rounding)
    # query heads grouped under their KV head: (B, Hkv, groups * T, D), group-major
    grouped = q.view(B, T, Hkv, groups, D).permute(0, 2, 3, 1, 4).reshape(B, Hkv, groups * T, D)
    out, lse = _flash(grouped, own_k, own_v, batch.own_bias)
    if batch.shared_slots is not None:
        out_s, lse_s = _shared_prefix_attention(grouped, k_pool, v_pool, batch.shared_slots)
        out_s = out_s.view(Hkv, B, groups * T, D).transpose(0, 1)
        lse_s = lse_s.view(Hkv, B, groups * T).transpose(0, 1)
        total = torch.logaddexp(lse, lse_s)
        out = (out.float() * torch.exp(lse - total).unsqueeze(-1)
               + out_s.float() * torch.exp(lse_s - total).unsqueeze(-1)).to(q.dtype)
    return out.view(B, Hkv, groups, T, D).permute(0, 3, 1, 2, 4).reshape(B, T, H * D)


def _plain_attention(q, own_k, own_v, batch: PagedBatch, layer: int, fp16_rounding: bool) -> torch.Tensor:
    B, T, H, D = q.shape
    k, v, mask = own_k, own_v, batch.own_mask
    if batch.shared_slots is not None:
        S = batch.shared_slots.numel()
        shared_k = batch.k_pool[layer][batch.shared_slots].transpose(0, 1).expand(B, -1, -1, -1)
        shared_v = batch.v_pool[layer][batch.shared_slots].transpose(0, 1).expand(B, -1, -1, -1)
        k, v = torch.cat([shared_k, own_k], dim=2), torch.cat([shared_v, own_v], dim=2)
        mask = torch.cat([torch.ones(B, 1, T, S, dtype=torch.bool, device=mask.device), mask], dim=-1)
    q = q.transpose(1, 2)  # (B, H, T, D)
    if fp16_rounding:
        out = fp16_rounded_attention(q, k.to(q.dtype), v.to(q.dtype), mask)
    else:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return out.transpose(1, 2).reshape(B, T, H * D)


def exact_attention(q, own_k, own_v, batch: PagedBatch) -> torch.Tensor:
    """Batch-invariant attention: each row alone, over exactly its keys, in float64.

    The fused kernel's result for a query changes with how many (even masked) keys and queries
    share its call, and those depend on the neighbours and the prefill chunk. Here a query's
    result depends only on its own keys; float64 sums make the order of reduction (which the
    number of masked keys still changes) vanish when the result is rounded back.
    """
    B, T, H, D = q.shape
    out = torch.zeros(B, T, H, D, dtype=q.dtype, device=q.device)
    groups = H // own_k.shape[1]
    for b, (n, keys) in enumerate(batch.exact):
        qb = q[b, :n].transpose(0, 1).double()  # (H, n, D)
        kb = own_k[b, :, :keys].repeat_interleave(groups, 0).double()  # (H, keys, D)
        vb = own_v[b, :, :keys].repeat_interleave(groups, 0).double()
        scores = (qb @ kb.transpose(1, 2)) / D ** 0.5  # (H, n, keys)
        scores = scores.masked_fill(~batch.own_mask[b, 0, :n, :keys], float("-inf"))
        out[b, :n] = (torch.softmax(scores, -1) @ vb).transpose(0, 1).to(q.dtype)  # (n, H, D)
    return out.reshape(B, T, H * D)
