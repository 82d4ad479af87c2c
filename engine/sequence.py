"""One sample being generated (a request with n = 3 has three), and the rule that ends it."""
from __future__ import annotations

from dataclasses import dataclass, field

from .completion import Completion
from .reasoning import ReasoningSplitter
from .request import RequestHandle
from .sampling import SamplerState
from .text_stream import TextStream


@dataclass(eq=False)
class Sequence:
    id: int
    handle: RequestHandle
    index: int  # which of the request's n samples
    tokens: list[int]  # prompt + generated
    sampler: SamplerState
    stream: TextStream
    prompt_len: int
    admitted_at: int = 0  # admission order; the youngest is preempted first
    computed: int = 0  # tokens whose K/V are in the pool
    blocks: list[int] = field(default_factory=list)  # the block table
    content_ids: list[int] = field(default_factory=list)  # of the leading blocks published to the cache
    logprobs: list[dict] = field(default_factory=list)
    cumulative_logprob: float = 0.0
    thinking: ReasoningSplitter | None = None  # follows the reasoning block when its length is budgeted
    reasoning_tokens: int = 0
    forced: list[int] = field(default_factory=list)  # tokens that come next whatever is sampled (closing the block)
    matcher: object | None = None  # grammar matcher of a constrained output (engine/grammar.py)
    draft_misses: int = 0  # drafts rejected whole in a row: drafting pauses 2**misses steps (speculative.py)
    draft_pause: int = 0
    cached_tokens: int = 0  # prompt tokens found in the prefix cache at admission

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_len:]

    @property
    def pending(self) -> int:
        """Tokens not yet in the pool: 1 while decoding, more while (re)reading the prompt."""
        return len(self.tokens) - self.computed

    def completion(self, finish_reason: str) -> Completion:
        params = self.sampler.params
        return Completion(self.stream.text, self.generated, finish_reason, self.prompt_len, 0, self.index,
                          self.cumulative_logprob, self.logprobs if params.logprobs is not None else None,
                          self.cached_tokens)


def ends_on(token: int, seq: Sequence, eos_id: int | None) -> bool:
    """Whether `token` ends the sequence without becoming part of it (EOS or one of its stop ids)."""
    return token == eos_id or token in seq.sampler.params.stop_token_ids


def stop_reason(seq: Sequence, context: int) -> str | None:
    """After a token was added: "stop" at a stop string, "length" at max_tokens or the context, else None."""
    if seq.stream.stopped or (seq.matcher is not None and seq.matcher.is_stopped()):
        return "stop"
    if len(seq.generated) >= seq.sampler.params.max_tokens or len(seq.tokens) >= context:
        return "length"
    return None
