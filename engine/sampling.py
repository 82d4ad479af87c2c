"""Sampling parameters and the plain PyTorch sampler (batched, per-row parameters).

Order of operations, as llama.cpp's sampler chain, so a llama.cpp user gets the same behaviour:
  logit_bias -> penalties (repetition, frequency, presence) -> top-k -> typical -> top-p
  -> min-p -> temperature -> draw.
Each filter sees the distribution left by the one before it (renormalised over survivors).
- repetition_penalty (llama.cpp/HF): a logit of a token seen in the last `repeat_last_n` tokens
  (prompt and output) is divided by the penalty if positive, multiplied if negative.
- frequency_penalty / presence_penalty (OpenAI, over the output so far): logit -= count * freq
  + (count > 0) * presence.
- temperature 0 means greedy: the argmax after bias and penalties.
Nothing sorts the vocabulary: top-k and a peaked top-p use a partial selection (topk), a flat
top-p a histogram of the logits; the draw inverts the cumulative distribution with one uniform
per row from the row's own seeded generator, so a seed reproduces a sample.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from .kernels import cpu_matmul
from .sampling_params import SamplingParams, sampling_knobs

__all__ = ["SamplingParams", "sampling_knobs", "SamplerState", "sample", "top_logprobs"]

NEG_INF = float("-inf")


@dataclass
class SamplerState:
    """Per-row sampling state: params, the token window for penalties, output counts, RNG."""
    params: SamplingParams
    history: list[int]  # prompt + output tokens
    output_counts: dict[int, int] = field(default_factory=dict)
    generator: torch.Generator | None = None

    @classmethod
    def start(cls, params: SamplingParams, prompt: list[int], seed: int | None) -> SamplerState:
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
        return cls(params, list(prompt), {}, generator)

    def accept(self, token: int) -> None:
        self.history.append(token)
        self.output_counts[token] = self.output_counts.get(token, 0) + 1


@dataclass
class RowParams:
    """SamplingParams of a batch as tensors (B,), so one call serves a mixed batch."""
    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    typical_p: torch.Tensor

    @classmethod
    def of(cls, params: list[SamplingParams], device) -> RowParams:
        col = lambda name, dtype: torch.tensor([getattr(p, name) for p in params], dtype=dtype, device=device)  # noqa: E731
        return cls(col("temperature", torch.float32), col("top_k", torch.int64), col("top_p", torch.float32),
                   col("min_p", torch.float32), col("typical_p", torch.float32))


def apply_bias_and_penalties(logits: torch.Tensor, states: list[SamplerState]) -> torch.Tensor:
    """logit_bias, repetition, frequency and presence penalties, row by row: (B, V) -> (B, V)."""
    logits = logits.float().clone()
    for row, state in enumerate(states):
        p = state.params
        if p.logit_bias:
            ids = torch.tensor(list(p.logit_bias), device=logits.device)
            logits[row, ids] += torch.tensor(list(p.logit_bias.values()), device=logits.device)
        if p.repetition_penalty != 1.0 and p.repeat_last_n > 0 and state.history:
            seen = torch.tensor(sorted(set(state.history[-p.repeat_last_n:])), device=logits.device)
            values = logits[row, seen]
            logits[row, seen] = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
        if (p.frequency_penalty or p.presence_penalty) and state.output_counts:
            ids = torch.tensor(list(state.output_counts), device=logits.device)
            counts = torch.tensor(list(state.output_counts.values()), dtype=torch.float32, device=logits.device)
            logits[row, ids] -= counts * p.frequency_penalty + p.presence_penalty
    return logits


FIRST_SELECTION = 64  # top-p first looks at this many tokens per row, then 4x more while mass is missing


def top_k_filter(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep tokens whose logit is at least the k-th largest (k = 0: all). k: (B,).

    A partial selection (topk) of the largest k any row asks, not a sort of the vocabulary.
    """
    vocab = logits.shape[-1]
    k = torch.where(k > 0, k.clamp(max=vocab), vocab)
    largest = logits.topk(int(k.max()), dim=-1).values  # (B, max k), descending
    kth = largest.gather(-1, (k - 1).unsqueeze(-1))  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def _keep_smallest_prefix(order_probs: torch.Tensor, order: torch.Tensor, p: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """In the given order, keep tokens while the mass before them is below p (at least one)."""
    before = order_probs.cumsum(-1) - order_probs  # (B, V) exclusive cumulative mass
    keep_sorted = before < p.unsqueeze(-1)
    keep_sorted[:, 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, NEG_INF)


def typical_filter(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy, mass p."""
    probs = torch.softmax(logits, dim=-1)
    log_probs = torch.log_softmax(logits, dim=-1)
    entropy = -(probs * log_probs.nan_to_num(neginf=0.0)).sum(-1, keepdim=True)
    score = (-log_probs - entropy).abs()  # inf for filtered tokens: they sort last
    order = score.argsort(dim=-1, stable=True)
    filtered = _keep_smallest_prefix(probs.gather(-1, order), order, p, logits)
    return torch.where((p < 1).unsqueeze(-1), filtered, logits)


def top_p_filter(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Nucleus: keep the most probable tokens until their mass reaches p.

    Without sorting the vocabulary: the top FIRST_SELECTION tokens by partial selection hold the
    nucleus of a peaked row; for a flat one, `_wide_nucleus` bins the logits instead.
    """
    probs = torch.softmax(logits, dim=-1)
    top, order = probs.topk(min(FIRST_SELECTION, probs.shape[-1]), dim=-1)  # (B, k), descending
    before = top.cumsum(-1) - top  # exclusive cumulative mass
    keep_top = before < p.unsqueeze(-1)
    keep_top[:, 0] = True
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, keep_top)
    wide = ((top.sum(-1) < p) & (p < 1)).nonzero().flatten()  # the nucleus reaches past the selection
    if len(wide):
        keep[wide] = _wide_nucleus(logits[wide], probs[wide], p[wide])
    return torch.where((p < 1).unsqueeze(-1), logits.masked_fill(~keep, NEG_INF), logits)


NUCLEUS_BINS, NUCLEUS_BIN_WIDTH = 2048, 0.01  # logits binned by their distance below the row's max (nats)


def _wide_nucleus(logits: torch.Tensor, probs: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The sort-based nucleus of each row, from a histogram: the probability mass of logit bins
    (one pass) finds the bin where the cumulative mass crosses p; every bin above it is kept, and
    only that bin's tokens are sorted to place the cut exactly. (rows, V) bool."""
    depth = ((logits.amax(-1, keepdim=True) - logits) / NUCLEUS_BIN_WIDTH).clamp(max=NUCLEUS_BINS - 1).long()
    mass = torch.zeros(len(p), NUCLEUS_BINS, dtype=torch.float64).scatter_add_(1, depth, probs.double())
    cumulative = mass.cumsum(-1)
    boundary = (cumulative < p.unsqueeze(-1)).sum(-1).clamp(max=NUCLEUS_BINS - 1)  # first bin reaching p
    above = torch.where(boundary > 0, cumulative.gather(-1, (boundary - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0)
    keep = depth < boundary.unsqueeze(-1)
    in_bin = depth == boundary.unsqueeze(-1)
    values, order = probs.masked_fill(~in_bin, -1.0).topk(int(in_bin.sum(-1).max()), dim=-1)  # the bin, descending
    before = above.unsqueeze(-1) + values.double().cumsum(-1) - values.double()
    return keep.scatter(-1, order, (values >= 0) & (before < p.unsqueeze(-1))) | keep


def min_p_filter(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Keep tokens with probability at least min_p times the most probable one's."""
    probs = torch.softmax(logits, dim=-1)
    threshold = probs.amax(-1, keepdim=True) * min_p.unsqueeze(-1)
    return logits.masked_fill(probs < threshold, NEG_INF)


def filter_logits(logits: torch.Tensor, rows: RowParams) -> torch.Tensor:
    """top-k -> typical -> top-p -> min-p, per row; filtered tokens become -inf.

    A filter no row uses is skipped (each one sorts or normalises the whole vocabulary).
    """
    if bool((rows.top_k > 0).any()):
        logits = top_k_filter(logits, rows.top_k)
    if bool((rows.typical_p < 1).any()):
        logits = typical_filter(logits, rows.typical_p)
    if bool((rows.top_p < 1).any()):
        logits = top_p_filter(logits, rows.top_p)
    if bool((rows.min_p > 0).any()):
        logits = min_p_filter(logits, rows.min_p)
    return logits


def sampling_distribution(logits: torch.Tensor, rows: RowParams) -> torch.Tensor:
    """The exact distribution a row samples from (after filters and temperature): (B, V)."""
    filtered = filter_logits(logits, rows)
    temperature = rows.temperature.clamp(min=1e-6).unsqueeze(-1)
    return torch.softmax(filtered / temperature, dim=-1)


def draw(probs: torch.Tensor, states: list[SamplerState]) -> torch.Tensor:
    """One token per row from probs (B, V) by inverting its cumulative distribution with one uniform
    per row from the row's own generator: a pass over the vocabulary, no noise for every token."""
    uniforms = _uniforms(states)
    cumulative = probs.double().cumsum(-1)
    target = (uniforms.to(probs.device) * cumulative[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cumulative, target, right=True).squeeze(-1)
    return index.clamp(max=probs.shape[-1] - 1)


def _uniforms(states: list[SamplerState]) -> torch.Tensor:
    """One uniform per row from the row's own generator (a seed reproduces the draw)."""
    return torch.stack([torch.rand((), generator=s.generator, dtype=torch.float64) for s in states])


def sample(logits: torch.Tensor, states: list[SamplerState], use_triton: bool | None = None,
           bitmask: torch.Tensor | None = None) -> torch.Tensor:
    """Next token per row (B,) from raw logits (B, V), following each row's SamplingParams.

    `bitmask` (B, ceil(V / 32)) int32, packed: a row samples only tokens whose bit is set (grammar
    constraints; all bits set for a free row). No bias or penalty can bring back a masked token.
    `use_triton` (default: on CUDA when Triton is installed) runs the fused kernels instead.
    """
    if use_triton is None:
        use_triton = logits.is_cuda and _triton_available()
    if use_triton:
        return _sample_triton(logits, states, bitmask)
    logits = apply_bias_and_penalties(logits, states)  # a copy: the caller's logits stay raw for logprobs
    if bitmask is not None:  # after bias and penalties is the same: they never lift a -inf
        mask_disallowed(logits, bitmask)
    rows = RowParams.of([s.params for s in states], logits.device)
    if bool((rows.temperature == 0).all()):
        return logits.argmax(-1)
    if _native(logits, rows):  # the same distribution and uniforms, without the passes of the reference
        return cpu_matmul.sample_rows(logits, rows.temperature, rows.top_k, rows.top_p, rows.min_p, _uniforms(states))
    drawn = draw(sampling_distribution(logits, rows), states)
    return torch.where(rows.temperature == 0, logits.argmax(-1), drawn)


def _native(logits: torch.Tensor, rows: RowParams) -> bool:
    """Whether the native sampler takes this batch (it takes a greedy row's argmax too): no typical-p row."""
    return _native_cpu(logits) and not bool((rows.typical_p < 1).any())


def _native_cpu(logits: torch.Tensor) -> bool:
    """Whether kernels/cpu_sampling.c can take these logits: float32 on the CPU, the native kernels built."""
    return logits.device.type == "cpu" and logits.dtype == torch.float32 and cpu_matmul.available()


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _adjustment_tables(states: list[SamplerState], device):
    """Per row, the unique tokens touched by bias or penalties: ids, bias, in-window flag, output count."""
    rows = []
    for s in states:
        p = s.params
        window = set(s.history[-p.repeat_last_n:]) if p.repetition_penalty != 1.0 and p.repeat_last_n else set()
        counts = s.output_counts if (p.frequency_penalty or p.presence_penalty) else {}
        tokens = sorted(set(p.logit_bias) | window | set(counts))
        rows.append([(t, p.logit_bias.get(t, 0.0), int(t in window), counts.get(t, 0)) for t in tokens])
    width = max((len(r) for r in rows), default=0)
    padded = [r + [(-1, 0.0, 0, 0)] * (width - len(r)) for r in rows]
    column = lambda i, dtype: torch.tensor([[e[i] for e in r] for r in padded], dtype=dtype).reshape(len(rows), width).to(device)  # noqa: E731
    return column(0, torch.int64), column(1, torch.float32), column(2, torch.int32), column(3, torch.int32)


def _sample_triton(logits: torch.Tensor, states: list[SamplerState], bitmask: torch.Tensor | None) -> torch.Tensor:
    from .kernels.sampling import launch_adjust, launch_bitmask, launch_sample

    device = logits.device
    logits = logits.float().contiguous().clone()
    if bitmask is not None:
        launch_bitmask(logits, bitmask.to(device).contiguous())
    params = [s.params for s in states]
    per_row = lambda name: torch.tensor([getattr(p, name) for p in params], dtype=torch.float32, device=device)  # noqa: E731
    launch_adjust(logits, *_adjustment_tables(states, device), per_row("repetition_penalty"),
                  per_row("frequency_penalty"), per_row("presence_penalty"))
    rows = RowParams.of(params, device)
    # a fresh 31-bit seed per row and step from the row's own generator: reproducible, no device sync
    seeds = torch.tensor([int(torch.randint(0, 2**31 - 1, (1,), generator=s.generator)) for s in states],
                         dtype=torch.int64, device=device)
    return launch_sample(logits, rows.temperature, rows.top_k, rows.top_p, rows.min_p, rows.typical_p, seeds)[:, 0]


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Packed int32 bitmask (rows, ceil(V / 32)) -> bool (rows, V): True where the token is allowed."""
    if bitmask.device.type == "cpu" and sys.byteorder == "little":  # numpy unpacks bytes ~10x faster than shifts
        bits = np.unpackbits(bitmask.contiguous().numpy().view(np.uint8), axis=1, count=vocab_size, bitorder="little")
        return torch.from_numpy(bits).bool()
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    return ((bitmask.unsqueeze(-1) >> shifts) & 1).flatten(1)[:, :vocab_size].bool()


def mask_disallowed(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """In place: -inf for every token a row's bitmask disallows. Rows with all bits set (free rows in a
    mixed batch) are skipped, so a mostly free batch pays only for its constrained rows. On the CPU with the
    native kernels, one pass in C (kernels/cpu_sampling.c); the PyTorch path below is its reference."""
    bitmask = bitmask.to(logits.device)
    if _native_cpu(logits) and logits.is_contiguous():
        cpu_matmul.mask_disallowed_(logits, bitmask.to(torch.int32))
        return
    rows = (bitmask != -1).any(-1).nonzero().flatten()
    if len(rows) == len(logits):
        logits.masked_fill_(~unpack_bitmask(bitmask, logits.shape[-1]).to(logits.device), NEG_INF)
    elif len(rows):
        allowed = unpack_bitmask(bitmask[rows], logits.shape[-1]).to(logits.device)
        logits[rows] = logits[rows].masked_fill(~allowed, NEG_INF)


def top_logprobs(logits: torch.Tensor, chosen: torch.Tensor, n: int) -> list[dict]:
    """The model's log-probabilities (raw logits, before any processing) of the chosen token and the top n."""
    logits = logits.float()
    normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)  # one pass; no (rows, vocab) log-softmax unless asked
    chosen_logprobs = (logits.gather(-1, chosen.view(-1, 1).to(logits.device)) - normaliser).squeeze(-1).tolist()
    top = logits.topk(n, dim=-1) if n else None
    alternatives = ([dict(zip(ids, values)) for ids, values in zip(top.indices.tolist(), (top.values - normaliser).tolist())]
                    if top is not None else [{} for _ in chosen_logprobs])
    return [{"token": int(token), "logprob": logprob, "top": top_n}
            for token, logprob, top_n in zip(chosen.tolist(), chosen_logprobs, alternatives)]
