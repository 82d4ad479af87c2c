"""What passes between the scheduler and the runner each step: plain data, no tensors.

The scheduler plans a step (which sequences, which of their tokens, where their K/V live); the
runner executes the plan (forward passes and sampling) and returns the sampled tokens; the
scheduler then applies them (after vLLM v1's SchedulerOutput / ModelRunnerOutput split).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .sampling import SamplerState


@dataclass
class RowPlan:
    """One sequence's part of a forward pass."""
    seq_id: int
    token_ids: list[int]  # the tokens fed this step: a prefill chunk, or the last sampled token
    start: int  # position of token_ids[0]: how many of the sequence's tokens are already in the pool
    block_table: list[int]  # the sequence's KV blocks, in order
    sampler: SamplerState | None = None  # set when the row's last token is sampled this step
    forced_token: int | None = None  # the token that comes next instead of a sampled one
    matcher: object | None = None  # the row's grammar matcher (llguidance) when its output is constrained
    deterministic: bool = False  # its result must not depend on the rest of the batch
    draft: list[int] = field(default_factory=list)  # speculative tokens (token_ids ends with them) to verify


@dataclass
class ForwardBatch:
    """Rows computed in one forward pass."""
    rows: list[RowPlan]
    shared_blocks: int = 0  # leading blocks every row has in common (cached, so read once for all)

    @property
    def tokens(self) -> int:
        return sum(len(r.token_ids) for r in self.rows)


@dataclass
class StepPlan:
    """One scheduler step: a decode pass for running sequences and a prefill chunk, either may be absent."""
    batches: list[ForwardBatch] = field(default_factory=list)

    @property
    def rows(self) -> list[RowPlan]:
        return [row for batch in self.batches for row in batch.rows]


@dataclass
class SampledToken:
    token_id: int
    logprob: float  # the model's log-probability of the token (raw distribution)
    top: dict[int, float] = field(default_factory=dict)  # the most probable alternatives, when asked for


@dataclass
class StepOutput:
    """What the runner returns: the tokens every row that asked emits, in order (a row with a draft
    emits its accepted draft tokens, then the one the model drew)."""
    sampled: dict[int, list[SampledToken]] = field(default_factory=dict)  # seq_id -> tokens
