"""Perplexity as llama.cpp's `llama-perplexity` computes it: the text's tokens cut into
non-overlapping windows of `ctx` tokens (the first one BOS when the model adds one), and in each
window the second half scored: exp(mean negative log-likelihood of each next token)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Perplexity:
    value: float
    nll: float  # mean negative log-likelihood per scored token
    tokens_scored: int
    windows: int
    ctx: int


def windows_of(token_ids: list[int], ctx: int, bos_id: int | None) -> list[list[int]]:
    """Whole windows only (the tail that does not fill one is dropped, as llama.cpp does)."""
    if ctx < 4:
        raise ValueError(f"ctx must be at least 4 tokens, got {ctx}")
    windows = [list(token_ids[i:i + ctx]) for i in range(0, len(token_ids) - ctx + 1, ctx)]
    if bos_id is not None:
        for window in windows:
            window[0] = bos_id
    return windows


def window_nll(logits: torch.Tensor, window: list[int]) -> tuple[float, int]:
    """Summed NLL of tokens ctx/2+1 … ctx-1 of a window given its logits (ctx, vocab), and their count."""
    first = len(window) // 2
    log_probs = torch.log_softmax(logits[first:len(window) - 1].double(), dim=-1)
    targets = torch.tensor(window[first + 1:])
    return float(-log_probs.gather(1, targets.unsqueeze(1)).sum()), len(targets)


def perplexity(logits_of: Callable[[list[int]], torch.Tensor], token_ids: list[int], ctx: int, bos_id: int | None,
               progress: Callable[[int, int], None] | None = None) -> Perplexity:
    """Perplexity of `token_ids` under a model given as `logits_of(window) -> (len, vocab)` logits."""
    windows = windows_of(token_ids, ctx, bos_id)
    if not windows:
        raise ValueError(f"the text has {len(token_ids)} tokens: fewer than one window of {ctx}; "
                         "use a longer text or a smaller ctx")
    total, count = 0.0, 0
    for i, window in enumerate(windows):
        nll, n = window_nll(logits_of(window), window)
        total, count = total + nll, count + n
        if progress:
            progress(i + 1, len(windows))
    return Perplexity(math.exp(total / count), total / count, count, len(windows), ctx)
