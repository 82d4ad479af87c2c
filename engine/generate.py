"""What generation returns (Completion) and the prompt checks every decoding path shares.

Sampling decodes through the scheduler (scheduler.py); beam search keeps its own contiguous
cache (beam_search.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Completion:
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" (EOS, a stop id or a stop string), "length" or "cancelled"
    prompt_tokens: int = 0
    prompt_index: int = 0  # which prompt this completes
    index: int = 0  # which of its n samples (or beams, best first)
    cumulative_logprob: float = 0.0  # sum of the model's log-probabilities of token_ids
    logprobs: list[dict] | None = None  # per token: {"token", "logprob", "top": {id: logprob}}


class ContextLengthError(ValueError):
    pass


def check_prompts(prompts: list[list[int]], context: int) -> None:
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty")
        if len(p) >= context:
            raise ContextLengthError(f"prompt {i} has {len(p)} tokens; the model's context is {context}")
