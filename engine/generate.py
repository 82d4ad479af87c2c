"""Batched greedy generation with a KV cache: prefill all prompts, then decode one token a step.

Prompts of different lengths are right-padded; each row decodes at its own position, and the
causal mask hides the padded slots until they are overwritten.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .model import Transformer
from .text_stream import TextStream
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Completion:
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int = 0


class ContextLengthError(ValueError):
    pass


@dataclass
class _Row:
    prompt: list[int]
    stream: TextStream
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None


@torch.inference_mode()
def generate(model: Transformer, tokenizer: Tokenizer, prompts: list[list[int]], max_tokens: int,
             stop: list[str] = (), stop_token_ids: set[int] = frozenset()) -> list[Completion]:
    """Greedy continuations of tokenized prompts; stops at EOS, a stop id or string, or max_tokens."""
    context = model.args.max_seq_len
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty")
        if len(p) >= context:
            raise ContextLengthError(f"prompt {i} has {len(p)} tokens; the model's context is {context}")
    rows = [_Row(p, TextStream(stop)) for p in prompts]
    stop_ids = set(stop_token_ids) | ({tokenizer.eos_id} if tokenizer.eos_id is not None else set())
    device = model.tok_embeddings.weight.device
    cache_len = min(context, max(len(p) for p in prompts) + max_tokens)
    model.setup_cache(len(prompts), cache_len)
    try:
        next_ids = _prefill(model, prompts, device)
        for step in range(max_tokens):
            _accept(rows, next_ids.tolist(), tokenizer, stop_ids, max_tokens, cache_len)
            if all(r.finish_reason for r in rows):
                break
            positions = torch.tensor([[min(len(r.prompt) + step, cache_len - 1)] for r in rows], device=device)
            next_ids = model(next_ids.view(-1, 1), positions)[:, -1].argmax(-1)
    finally:
        model.clear_cache()
    return [_completion(r) for r in rows]


def _prefill(model: Transformer, prompts: list[list[int]], device) -> torch.Tensor:
    width = max(len(p) for p in prompts)
    tokens = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = torch.tensor(p)
    positions = torch.arange(width, device=device).expand(len(prompts), -1)
    logits = model(tokens, positions)  # (B, width, vocab)
    last = torch.tensor([len(p) - 1 for p in prompts], device=device)
    return logits[torch.arange(len(prompts), device=device), last].argmax(-1)


def _accept(rows, token_ids, tokenizer, stop_ids, max_tokens, cache_len) -> None:
    for row, token in zip(rows, token_ids):
        if row.finish_reason:
            continue
        if token in stop_ids:
            row.finish_reason = "stop"
            continue
        row.token_ids.append(token)
        row.stream.feed(tokenizer.token_bytes(token))
        if row.stream.stopped:
            row.finish_reason = "stop"
        elif len(row.token_ids) >= max_tokens or len(row.prompt) + len(row.token_ids) >= cache_len:
            row.finish_reason = "length"


def _completion(row: _Row) -> Completion:
    row.stream.finish()
    return Completion(row.stream.text, row.token_ids, row.finish_reason or "length", len(row.prompt))
