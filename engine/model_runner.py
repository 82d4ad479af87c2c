"""Executes a StepPlan: builds each forward pass's tensors over the paged KV pool, runs the model,
samples the rows that asked for a token. The one place tensors are made from sequences."""
from __future__ import annotations

import time

import torch

from .kv_pool import BlockPool
from .model import Transformer
from .paged_attention import PagedBatch
from .sampling import sample, top_logprobs
from .speculative import verify
from .step_plan import RowPlan, SampledToken, StepOutput, StepPlan
from .threads import ThreadChooser

CPU_THREADS = torch.get_num_threads()  # read before any runner lowers it


@torch.inference_mode()
def forward_rows(model: Transformer, pool: BlockPool, rows: list[RowPlan], shared_blocks: int = 0,
                 every_position: bool = False) -> torch.Tensor:
    """One forward pass of `rows` over the pool: writes their K/V, returns float32 logits of each row's
    last token (B, vocab_size) — of its every token for a row with a draft to verify, those in order
    (N, vocab_size) — or of every position of every row (B, T, vocab_size) with `every_position`."""
    device = model.device
    lengths = [len(r.token_ids) for r in rows]
    width = max(lengths)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    for b, (row, n) in enumerate(zip(rows, lengths)):
        tokens[b, :n] = torch.tensor(row.token_ids)
        positions[b, :n] = torch.arange(row.start, row.start + n)
        positions[b, n:] = row.start + n - 1  # padding repeats the last position (its K/V go to scratch)
    args = model.args
    paged = PagedBatch.build(pool.k, pool.v, [r.block_table for r in rows], [r.start for r in rows], lengths,
                             shared_blocks, pool.block_size, pool.k.dtype, args.n_heads // args.n_kv_heads,
                             args.sliding_window, batch_invariant=any(r.deterministic for r in rows),
                             native_decode=getattr(model, "native_decode", False))  # stand-in models: no
    logits_at = None if every_position else _sampled_positions(rows, device)
    return model(tokens.to(device), positions.to(device), paged, logits_at)


def _sampled_positions(rows: list[RowPlan], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) of every token whose logits are sampled: the last, or all of a draft row."""
    pairs = [(b, t) for b, row in enumerate(rows)
             for t in range(len(row.token_ids) - 1 - len(row.draft), len(row.token_ids))]
    rows_at, cols_at = zip(*pairs)
    return torch.tensor(rows_at, device=device), torch.tensor(cols_at, device=device)


class ModelRunner:
    """Runs the model for the scheduler: StepPlan in, sampled tokens out."""

    def __init__(self, model: Transformer, pool: BlockPool, max_threads: int = CPU_THREADS):
        self.model, self.pool, self.max_threads = model, pool, max_threads
        self.threads = ThreadChooser(max_threads) if model.device.type == "cpu" else None
        self._masks = None  # a MaskWorker, made for the first constrained row

    def execute(self, plan: StepPlan) -> StepOutput:
        output = StepOutput()
        for batch in plan.batches:
            rows = [row for row in batch.rows if row.sampler is not None]
            threads = self._set_threads(batch.tokens)
            # Grammar masks are computed while the forward runs when a core is free for them (beside a GPU, or
            # a small step on fewer threads than cores); on a CPU the forward fills, they wait: competing for
            # its cores slowed a 64-row step by ~10% (bench engine), more than computing them after costs.
            overlap = threads is None or threads < self.max_threads
            masks = self._start_masks(rows) if overlap else None
            started = time.perf_counter()
            logits = forward_rows(self.model, self.pool, batch.rows, batch.shared_blocks)
            if threads:
                self.threads.record(batch.tokens, threads, time.perf_counter() - started)
            if rows:
                masks = masks if overlap else self._start_masks(rows)
                output.sampled.update(self._emit(batch.rows, logits, self._bitmask(rows, masks, logits.shape[-1])))
        return output

    def _emit(self, rows: list[RowPlan], logits: torch.Tensor, bitmask: torch.Tensor | None) -> dict:
        """seq_id -> the tokens each sampled row emits. `logits` are ordered as forward_rows orders them
        (one per row, or 1 + len(draft) for a draft row); `bitmask` has a row per sampled row."""
        first, at = [], 0
        for row in rows:
            first.append(at)
            at += 1 + len(row.draft)
        sampled = [(i, row) for i, row in enumerate(rows) if row.sampler is not None]
        plain = [k for k, (_, row) in enumerate(sampled) if not row.draft]
        out = {}
        if plain:
            mask = bitmask[plain] if bitmask is not None else None
            rows_plain = [sampled[k][1] for k in plain]
            tokens = self._sample(logits[[first[sampled[k][0]] for k in plain]], rows_plain, mask)
            out.update({row.seq_id: [token] for row, token in zip(rows_plain, tokens)})
        for i, row in sampled:
            if row.draft:
                out[row.seq_id] = _verified(logits[first[i]:first[i] + 1 + len(row.draft)], row)
        return out

    def _start_masks(self, rows: list[RowPlan]):
        matchers = [r.matcher for r in rows if r.matcher is not None]
        if not matchers:
            return None
        if self._masks is None:
            from .grammar import MaskWorker  # llguidance loads only when a request is constrained
            self._masks = MaskWorker()
        return self._masks.start(matchers, self.model.args.vocab_size)

    @staticmethod
    def _bitmask(rows: list[RowPlan], masks, vocab_size: int) -> torch.Tensor | None:
        """The rows' packed allowed-token masks: the grammar's for constrained rows, all ones for the rest."""
        if masks is None:
            return None
        constrained = masks.result()
        bitmask = torch.full((len(rows), constrained.shape[1]), -1, dtype=torch.int32)
        bitmask[[i for i, r in enumerate(rows) if r.matcher is not None]] = constrained
        return bitmask

    @staticmethod
    def _sample(logits: torch.Tensor, rows: list[RowPlan], bitmask: torch.Tensor | None) -> list[SampledToken]:
        samplers = [r.sampler for r in rows]
        next_ids = sample(logits, samplers, bitmask=bitmask)
        forced = [(i, r.forced_token) for i, r in enumerate(rows) if r.forced_token is not None]
        if forced:  # the token is given, its log-probability is still the model's
            next_ids[[i for i, _ in forced]] = torch.tensor([t for _, t in forced], device=next_ids.device)
        want = max((s.params.logprobs or 0) for s in samplers)
        return [SampledToken(s["token"], s["logprob"], s["top"]) for s in top_logprobs(logits, next_ids, want)]

    def _set_threads(self, tokens: int) -> int | None:
        """Set this step's CPU thread count (see threads.py); None off the CPU."""
        if self.threads is None:
            return None
        wanted = self.threads.choose(tokens)
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
        return wanted


def _verified(logits: torch.Tensor, row: RowPlan) -> list[SampledToken]:
    """The tokens a draft row emits after verification, with the model's log-probabilities."""
    tokens = verify(logits.float().cpu(), row.draft, row.sampler)
    want = row.sampler.params.logprobs or 0
    scored = top_logprobs(logits[:len(tokens)], torch.tensor(tokens, device=logits.device), want)
    return [SampledToken(s["token"], s["logprob"], s["top"]) for s in scored]


def score_tokens(model: Transformer, pool: BlockPool, token_ids: list[int]) -> torch.Tensor:
    """float32 logits (len(token_ids), vocab) of one prompt read in full, in blocks borrowed from the pool."""
    blocks = pool.allocate(pool.blocks_for(len(token_ids)))
    try:
        return forward_rows(model, pool, [RowPlan(0, token_ids, 0, blocks)], every_position=True)[0]
    finally:
        pool.release(blocks)
