"""SamplingParams: one request's sampling settings, validated field by field (no torch here, so
frontends that only need the names and checks start fast). The order in which they apply is in
sampling.py."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from .completion import ParamError

CONSTRAINT_KINDS = ("json_schema", "regex", "choice", "lark", "gbnf")


@dataclass(frozen=True)
class Constraint:
    """What the output must match: a JSON schema (its JSON text; "{}" for any JSON value), a regular
    expression, one of several strings, or a context-free grammar in Lark or llama.cpp's GBNF syntax."""
    kind: str
    spec: str | tuple[str, ...]  # choice: the strings; otherwise the schema, regex or grammar text

    def __post_init__(self):
        if self.kind not in CONSTRAINT_KINDS:
            raise ParamError(f"constraint kind '{self.kind}' is not one of {', '.join(CONSTRAINT_KINDS)}", "constraint")
        if self.kind == "choice" and (isinstance(self.spec, str) or not self.spec):
            raise ParamError("a choice constraint needs a non-empty list of strings", "constraint")


KNOB = {"knob": True}  # field metadata: a per-request setting frontends expose (flags, UI, chat-model fields)


@dataclass
class SamplingParams:
    temperature: float = field(default=0.0, metadata=KNOB)
    top_k: int = field(default=0, metadata=KNOB)  # 0: off
    top_p: float = field(default=1.0, metadata=KNOB)
    min_p: float = field(default=0.0, metadata=KNOB)
    typical_p: float = field(default=1.0, metadata=KNOB)
    repetition_penalty: float = field(default=1.0, metadata=KNOB)
    repeat_last_n: int = 64
    frequency_penalty: float = field(default=0.0, metadata=KNOB)
    presence_penalty: float = field(default=0.0, metadata=KNOB)
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = field(default=None, metadata=KNOB)
    max_tokens: int = field(default=128, metadata=KNOB)
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    n: int = 1
    logprobs: int | None = None  # top-N alternatives per generated token
    num_beams: int = 1
    length_penalty: float = 1.0
    constraint: Constraint | None = None  # grammar-constrained output (engine/grammar.py)
    # speculative decoding: up to this many prompt-lookup draft tokens a step (speculative.py)
    draft_tokens: int = field(default=0, metadata=KNOB)
    # batch-invariant: the same tokens alone or in any batch (paged_attention.py)
    deterministic: bool = field(default=False, metadata=KNOB)
    max_reasoning_tokens: int | None = None  # reasoning models: close the thinking block after this many tokens

    def validate(self, vocab_size: int | None = None) -> SamplingParams:
        """Raise ParamError naming the first invalid field; return self."""
        checks = [
            ("temperature", self.temperature >= 0, "must be >= 0 (0 = greedy)"),
            ("top_k", self.top_k >= 0, "must be >= 0 (0 = off)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("min_p", 0 <= self.min_p <= 1, "must be in [0, 1]"),
            ("typical_p", 0 < self.typical_p <= 1, "must be in (0, 1]"),
            ("repetition_penalty", self.repetition_penalty > 0, "must be > 0 (1 = off)"),
            ("repeat_last_n", self.repeat_last_n >= 0, "must be >= 0"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "must be in [-2, 2]"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "must be in [-2, 2]"),
            ("max_tokens", self.max_tokens >= 1, "must be >= 1"),
            ("n", self.n >= 1, "must be >= 1"),
            ("logprobs", self.logprobs is None or 0 <= self.logprobs <= 20, "must be between 0 and 20"),
            ("num_beams", self.num_beams >= 1, "must be >= 1"),
            ("seed", self.seed is None or 0 <= self.seed < 2**63, "must be a non-negative integer"),
            ("draft_tokens", 0 <= self.draft_tokens <= 16, "must be between 0 and 16"),
            ("max_reasoning_tokens", self.max_reasoning_tokens is None or self.max_reasoning_tokens >= 0,
             "must be >= 0"),
            ("stop", all(isinstance(s, str) for s in self.stop), "must be a list of strings"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ParamError(f"{name} {rule}, got {getattr(self, name)!r}", name)
        if self.num_beams > 1 and (self.temperature > 0 or self.n > self.num_beams):
            raise ParamError("num_beams > 1 is deterministic: use temperature 0 and n <= num_beams", "num_beams")
        if self.num_beams > 1 and self.constraint is not None:
            raise ParamError("beam search does not take an output constraint; use num_beams=1", "num_beams")
        if vocab_size is not None:
            for name, ids in (("logit_bias", self.logit_bias), ("stop_token_ids", self.stop_token_ids)):
                bad = [t for t in ids if not 0 <= int(t) < vocab_size]
                if bad:
                    raise ParamError(f"{name} has token id {bad[0]}, outside the vocabulary (0..{vocab_size - 1})", name)
        return self


def sampling_knobs() -> tuple[str, ...]:
    """The SamplingParams fields a person sets per request (temperature … max_tokens), in declaration order."""
    return tuple(f.name for f in fields(SamplingParams) if f.metadata.get("knob"))
