"""What generation returns (Completion), the errors a caller's input can cause, and the one prompt check."""
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
    cached_tokens: int = 0  # prompt tokens whose K/V came from the prefix cache, not computed


class ParamError(ValueError):
    """A request parameter is invalid; `param` names it (as the OpenAI API's `error.param` does)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ContextLengthError(ParamError):
    """The prompt (or prompt plus what must be generated) does not fit the model's context or the KV pool."""

    def __init__(self, message: str, param: str | None = "prompt"):
        super().__init__(message, param)


def check_prompt(token_ids: list[int], context: int, vocab_size: int, *, room: int = 1) -> None:
    """Refuse an empty prompt, a token id outside the vocabulary, or one that leaves fewer than
    `room` positions of the context free (1 to generate: a prompt of exactly `context` tokens
    can only be scored, with room=0)."""
    if not token_ids:
        raise ParamError("the prompt is empty", "prompt")
    bad = next((t for t in token_ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise ParamError(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})", "prompt")
    if len(token_ids) + room > context:
        limit = context - room
        raise ContextLengthError(f"the prompt has {len(token_ids)} tokens; the model's context of {context} "
                                 f"allows at most {limit}{' to generate' if room else ''}")
