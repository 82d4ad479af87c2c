"""Speculative decoding without a draft model: prompt lookup (n-gram) drafts, verified by the target
model in one forward pass.

Drafting (after "prompt lookup decoding"): the last n tokens (n = 3, then 2, then 1) are looked up
earlier in the sequence; the tokens that followed their latest earlier occurrence are the draft.
PAL programs and ReAct steps copy names and numbers from the prompt, so drafts are often right.

Verification keeps the output distribution exactly the target model's (Leviathan et al., 2023;
Chen et al., 2023, with a draft distribution that is one-hot on the drafted token): at each
drafted position the target's filtered distribution p (after bias, penalties, top-k/p …, as the
sampler) accepts the drafted token x with probability p(x); on rejection the token is drawn from
p with x removed (the residual max(0, p - q), renormalised); when every draft is accepted, one
more token is drawn from the next position. Greedy (temperature 0) accepts x iff it is the argmax.
"""
from __future__ import annotations

import torch

from .sampling import RowParams, SamplerState, apply_bias_and_penalties, sampling_distribution

NGRAM_SIZES = (3, 2, 1)


def propose(tokens: list[int], max_draft: int, search_window: int = 1024) -> list[int]:
    """Up to `max_draft` tokens that followed the latest earlier occurrence of the sequence's last n-gram."""
    if max_draft <= 0:
        return []
    start = max(0, len(tokens) - search_window)
    for n in NGRAM_SIZES:
        if len(tokens) <= n:
            continue
        tail = tokens[-n:]
        for i in range(len(tokens) - n - 1, start - 1, -1):  # latest occurrence first, never the tail itself
            if tokens[i:i + n] == tail:
                return tokens[i + n:i + n + max_draft]
    return []


def verify(logits: torch.Tensor, draft: list[int], state: SamplerState) -> list[int]:
    """The tokens the target model emits: accepted draft tokens, then one it drew itself.

    logits: (len(draft) + 1, V), the rows' logits at the position before each drafted token and
    after the last. `state` is not changed (the caller accepts the returned tokens into it), but
    its generator advances.
    """
    scratch = SamplerState(state.params, list(state.history), dict(state.output_counts), state.generator)
    out = []
    for i in range(len(draft) + 1):
        probs, greedy = _distribution(logits[i:i + 1], scratch)
        proposed = draft[i] if i < len(draft) else None
        if proposed is not None and _accepts(probs, greedy, proposed, scratch.generator):
            out.append(proposed)
            scratch.accept(proposed)
            continue
        out.append(_draw(probs, greedy, proposed, scratch.generator))
        break
    return out


def _distribution(logits: torch.Tensor, state: SamplerState) -> tuple[torch.Tensor | None, int]:
    """The filtered sampling distribution (None when greedy) and the greedy token, for one position."""
    adjusted = apply_bias_and_penalties(logits, [state])
    greedy = int(adjusted.argmax(-1))
    if state.params.temperature == 0:
        return None, greedy
    return sampling_distribution(adjusted, RowParams.of([state.params], logits.device))[0].double(), greedy


def _accepts(probs: torch.Tensor | None, greedy: int, token: int, generator: torch.Generator) -> bool:
    if probs is None:
        return token == greedy
    return float(torch.rand((), generator=generator, dtype=torch.float64)) < float(probs[token])


def _draw(probs: torch.Tensor | None, greedy: int, rejected: int | None, generator: torch.Generator) -> int:
    """A token from p, or from the residual p without the rejected draft token."""
    if probs is None:
        return greedy
    if rejected is not None:
        probs = probs.clone()
        probs[rejected] = 0.0
        if float(probs.sum()) <= 0:  # p was all on the rejected token: cannot happen, p(x) = 1 accepts
            return rejected
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
