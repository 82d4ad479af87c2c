"""Continuous batching: the scheduler plans each step over the paged KV pool and applies its results.

`schedule()` admits waiting sequences while KV blocks last (reusing cached prefix blocks; a
sequence whose next prefix block another is computing right now waits a step, so a shared
few-shot prompt is computed once), makes room for every decoding sequence's next token
(preempting the youngest when the pool runs dry: its blocks are freed and it is recomputed
later, nothing it generated is lost), and returns a StepPlan: one decode pass for every running
sequence plus one prefill chunk of at most `prefill_chunk` prompt tokens, so a long prompt never
stalls the others for more than a chunk. The runner executes the plan; `update()` applies the
sampled tokens: text, stop rule, streaming events, completions. Runs on the compute thread only.
"""
from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable

from .completion import ContextLengthError
from .kv_pool import BlockPool, PoolExhausted
from .reasoning import ReasoningSplitter, ReasoningTags
from .request import RequestHandle, TokenEvent
from .sampling import SamplerState
from .sequence import Sequence, ends_on, stop_reason
from .speculative import propose
from .step_plan import ForwardBatch, RowPlan, SampledToken, StepOutput, StepPlan
from .text_stream import TextStream

log = logging.getLogger(__name__)

# Drafts are verified only while few sequences decode: a small step is dispatch-bound, so checking 4 more
# tokens per row is nearly free, but a 64-row step is compute-bound and drafts made it 2.3x slower (bench engine).
MAX_DRAFT_ROWS = 4
MAX_DRAFT_BACKOFF = 5  # after n wholly rejected drafts in a row a sequence drafts again in 2**n - 1 steps (<= 31)


class Scheduler:
    def __init__(self, pool: BlockPool, token_bytes: Callable[[int], bytes], eos_id: int | None, context: int, *,
                 max_batch: int = 64, prefill_chunk: int = 512, reasoning_tags: ReasoningTags | None = None,
                 reasoning_close_ids: list[int] | None = None, make_matcher: Callable | None = None):
        self.pool, self.token_bytes, self.eos_id, self.context = pool, token_bytes, eos_id, context
        self.max_batch, self.prefill_chunk = max_batch, prefill_chunk
        self.reasoning_tags, self.reasoning_close_ids = reasoning_tags or ReasoningTags(), list(reasoning_close_ids or [])
        self.make_matcher = make_matcher  # Constraint -> a fresh grammar matcher
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._by_id: dict[int, Sequence] = {}
        self.speculation = {"drafted_tokens": 0, "accepted_tokens": 0}  # since start, for stats and benchmarks
        self._ids = itertools.count(1)
        self._admissions = itertools.count()

    # ---- requests
    def check_fits(self, prompt_len: int) -> None:
        """Refuse a prompt that could never be admitted, however empty the pool (any thread: reads constants)."""
        needed = self.pool.blocks_for(prompt_len + 1)
        if needed > self.pool.usable_blocks:
            raise ContextLengthError(f"the prompt needs {needed} KV blocks; the pool has {self.pool.usable_blocks}"
                                     " (raise the KV cache budget)")

    def add(self, handle: RequestHandle) -> None:
        """Queue the request's n samples (sample j seeded seed + j)."""
        p = handle.params
        for j in range(p.n):
            seed = None if p.seed is None else p.seed + j
            seq = Sequence(next(self._ids), handle, j, list(handle.prompt),
                           SamplerState.start(p, handle.prompt, seed), TextStream(p.stop), len(handle.prompt))
            if p.constraint is not None:
                seq.matcher = self.make_matcher(p.constraint)
            if p.max_reasoning_tokens is not None or (seq.matcher is not None and handle.starts_in_reasoning):
                # followed for a budget, or so a constraint holds the answer only (as vLLM's reasoning parsers)
                seq.thinking = ReasoningSplitter(self.reasoning_tags, handle.starts_in_reasoning)
                self._budget_reasoning(seq)
            self._by_id[seq.id] = seq
            self.waiting.append(seq)

    def cancel(self, handle: RequestHandle) -> None:
        for seq in [s for s in self.running + list(self.waiting) if s.handle is handle]:
            self._remove(seq)
            self._finish(seq, "cancelled")

    def fail_all(self, error: BaseException) -> None:
        for seq in self.running + list(self.waiting):
            self._remove(seq)
            seq.handle._fail(error)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def waiting_requests(self) -> int:
        return len({id(s.handle) for s in self.waiting})

    # ---- planning
    def schedule(self) -> StepPlan:
        """Admit what fits, make room for every decoding sequence's next token, plan one step."""
        self._admit()
        plan = StepPlan()
        decoding = [s for s in self.running if s.pending == 1]
        self._ensure_room(decoding)
        decoding = [s for s in decoding if s in self.running]
        if decoding:
            drafting = len(decoding) <= MAX_DRAFT_ROWS
            plan.batches.append(self._batch([self._row(s, 1, self._draft(s) if drafting else None) for s in decoding]))
        prefill = self._prefill_rows()
        if prefill:
            plan.batches.append(self._batch(prefill))
        return plan

    def _admit(self) -> None:
        deferred = []
        prefilling = [s for s in self.running if s.pending > 1]
        while self.waiting and len(self.running) < self.max_batch:
            seq = self.waiting.popleft()
            if any(self._shares_unpublished_block(seq, other) for other in prefilling):
                deferred.append(seq)  # part of its prefix is being computed right now: wait and reuse it
                continue
            if not self._take_blocks(seq):
                self.waiting.appendleft(seq)
                break
            seq.admitted_at = next(self._admissions)
            self.running.append(seq)
            prefilling.append(seq)
        self.waiting.extendleft(reversed(deferred))

    def _shares_unpublished_block(self, seq: Sequence, other: Sequence) -> bool:
        """Whether `seq` starts with the published blocks of `other` and also its next, not yet computed, block."""
        end = (len(other.content_ids) + 1) * self.pool.block_size
        return len(seq.tokens) > end and len(other.tokens) >= end and seq.tokens[:end] == other.tokens[:end]

    def _take_blocks(self, seq: Sequence) -> bool:
        """Cached prefix blocks plus own blocks for the rest of its tokens; False if the pool is short."""
        bs = self.pool.block_size
        blocks, content_ids = self.pool.match_prefix(seq.tokens)
        if len(blocks) * bs >= len(seq.tokens):  # the last token must be computed for its logits
            self.pool.release(blocks[-1:])
            blocks, content_ids = blocks[:-1], content_ids[:-1]
        needed = self.pool.blocks_for(len(seq.tokens) + 1) - len(blocks)  # + 1: the next token's slot
        try:
            own = self.pool.allocate(needed)
        except PoolExhausted:
            self.pool.release(blocks)
            return False
        seq.blocks, seq.content_ids, seq.computed = blocks + own, content_ids, len(blocks) * bs
        if not seq.generated:  # first admission only: a preempted sequence's recompute is not its prompt's cost
            seq.cached_tokens = seq.computed
        return True

    def _ensure_room(self, decoding: list[Sequence]) -> None:
        """Every decoding sequence gets a slot for its next token, preempting the youngest if needed."""
        bs = self.pool.block_size
        for seq in sorted(decoding, key=lambda s: s.admitted_at):
            if seq not in self.running or len(seq.blocks) * bs > len(seq.tokens):
                continue
            while True:
                try:
                    seq.blocks += self.pool.allocate(1)
                    break
                except PoolExhausted:
                    victim = max(self.running, key=lambda s: s.admitted_at)
                    if victim is not seq:
                        self._preempt(victim)
                        continue
                    if len(self.running) > 1:
                        self._preempt(seq)  # the youngest itself: it waits and is recomputed
                    else:  # alone and the whole pool is not enough: stop it here
                        self._remove(seq)
                        self._finish(seq, "length")
                    break

    def _draft(self, seq: Sequence) -> list[int]:
        """Prompt-lookup draft tokens, as many as the request asks and its blocks already hold (a draft
        never preempts anyone: without room it is shorter); none where tokens are forced or constrained."""
        p = seq.sampler.params
        if not p.draft_tokens or seq.forced or seq.matcher is not None:
            return []
        if seq.draft_pause:  # its recent drafts were all rejected: verifying them costs more than it saves
            seq.draft_pause -= 1
            return []
        room = min(p.draft_tokens, p.max_tokens - len(seq.generated) - 1, self.context - len(seq.tokens))
        draft = propose(seq.tokens, room)
        while draft and len(seq.blocks) * self.pool.block_size < len(seq.tokens) + len(draft):
            try:
                seq.blocks += self.pool.allocate(1)
            except PoolExhausted:
                draft = draft[:len(seq.blocks) * self.pool.block_size - len(seq.tokens)]
        return draft

    def _note_draft(self, seq: Sequence, drafted: int, accepted: int) -> None:
        self.speculation["drafted_tokens"] += drafted
        self.speculation["accepted_tokens"] += accepted
        seq.draft_misses = 0 if accepted else min(seq.draft_misses + 1, MAX_DRAFT_BACKOFF)
        seq.draft_pause = 2 ** seq.draft_misses - 1 if seq.draft_misses else 0

    def _preempt(self, seq: Sequence) -> None:
        log.info("KV pool full: %s (sample %d) waits and will be recomputed", seq.handle.id, seq.index)
        self.running.remove(seq)
        self._drop_blocks(seq)
        self.waiting.appendleft(seq)

    def _prefill_rows(self) -> list[RowPlan]:
        """This step's prompt tokens, within the chunk budget. The oldest prompt being read always gets
        at least half the budget (so it never starves); the rest goes to the others shortest first, so
        a short request is not stuck behind a long one; what is left goes back to the oldest."""
        reading = sorted((s for s in self.running if s.pending > 1), key=lambda s: s.admitted_at)
        if not reading:
            return []
        oldest, others = reading[0], sorted(reading[1:], key=lambda s: s.pending)
        takes = {oldest: min(oldest.pending, self.prefill_chunk // 2 if others else self.prefill_chunk)}
        budget = self.prefill_chunk - takes[oldest]
        for seq in others:
            if budget <= 0:
                break
            takes[seq] = min(seq.pending, budget)
            budget -= takes[seq]
        takes[oldest] += min(oldest.pending - takes[oldest], budget)
        return [self._row(seq, take) for seq, take in takes.items()]

    def _row(self, seq: Sequence, take: int, draft: list[int] | None = None) -> RowPlan:
        start = seq.computed
        finishes = start + take == len(seq.tokens)  # its last token's logits are sampled
        forced = seq.forced[0] if finishes and seq.forced else None
        matcher = seq.matcher if finishes and not _thinking(seq) else None
        return RowPlan(seq.id, seq.tokens[start:start + take] + list(draft or []), start, list(seq.blocks),
                       seq.sampler if finishes else None, forced, matcher,
                       seq.sampler.params.deterministic, list(draft or []))

    def _batch(self, rows: list[RowPlan]) -> ForwardBatch:
        return ForwardBatch(rows, self._shared_blocks(rows))

    def _shared_blocks(self, rows: list[RowPlan]) -> int:
        """How many leading blocks every row has in common (all cached, so all computed)."""
        if len(rows) < 2:
            return 0
        seqs = [self._by_id[r.seq_id] for r in rows]
        first = rows[0].block_table
        limit = min(min(len(s.content_ids) for s in seqs), min(r.start for r in rows) // self.pool.block_size)
        count = 0
        while count < limit and all(r.block_table[count] == first[count] for r in rows):
            count += 1
        return count

    # ---- applying a step's results
    def update(self, plan: StepPlan, output: StepOutput) -> None:
        """The planned tokens are now in the pool; the sampled ones extend their sequences."""
        for row in plan.rows:
            seq = self._by_id.get(row.seq_id)
            if seq is None:
                continue
            accepted = len(output.sampled.get(row.seq_id, [None])) - 1 if row.draft else 0
            if row.draft:
                self._note_draft(seq, len(row.draft), accepted)
            seq.computed += len(row.token_ids) - len(row.draft) + accepted  # a rejected draft's K/V is junk
            self._publish_full_blocks(seq)
        for seq_id, tokens in output.sampled.items():
            for token in tokens:
                if seq_id not in self._by_id:  # it ended on an earlier token of this step
                    break
                self._accept(self._by_id[seq_id], token)

    def _publish_full_blocks(self, seq: Sequence) -> None:
        bs = self.pool.block_size
        while (len(seq.content_ids) + 1) * bs <= seq.computed:
            i = len(seq.content_ids)
            parent = seq.content_ids[-1] if seq.content_ids else 0
            seq.content_ids.append(self.pool.register(seq.blocks[i], parent, seq.tokens[i * bs:(i + 1) * bs]))

    def _accept(self, seq: Sequence, sampled: SampledToken) -> None:
        token = sampled.token_id
        if ends_on(token, seq, self.eos_id):
            self._retire(seq, "stop")
            return
        params = seq.sampler.params
        seq.sampler.accept(token)
        seq.tokens.append(token)
        seq.cumulative_logprob += sampled.logprob
        logprob = None
        if params.logprobs is not None:
            logprob = {"token": token, "logprob": sampled.logprob,
                       "top": dict(list(sampled.top.items())[:params.logprobs])}
            seq.logprobs.append(logprob)
        text = seq.stream.feed(self.token_bytes(token))
        seq.handle._emit(TokenEvent(seq.index, token, text, logprob))
        if seq.matcher is not None and not _thinking(seq) and not seq.matcher.consume_token(token):
            log.warning("%s: token %d broke the output constraint (%s)", seq.handle.id, token, seq.matcher.get_error())
        if seq.thinking is not None:
            self._follow_reasoning(seq, token)
        reason = stop_reason(seq, self.context)
        if reason:
            self._retire(seq, reason)

    def _follow_reasoning(self, seq: Sequence, token: int) -> None:
        if seq.forced and seq.forced[0] == token:
            seq.forced.pop(0)
        inside = seq.thinking.inside
        seq.thinking.feed(self.token_bytes(token).decode("utf-8", errors="ignore"))
        seq.reasoning_tokens += inside
        self._budget_reasoning(seq)

    def _budget_reasoning(self, seq: Sequence) -> None:
        """Close the reasoning block once it has used its budget: its close tag comes next."""
        budget = seq.sampler.params.max_reasoning_tokens
        if budget is not None and seq.thinking.inside and seq.reasoning_tokens >= budget and not seq.forced:
            seq.forced = list(self.reasoning_close_ids)

    def _retire(self, seq: Sequence, reason: str) -> None:
        self._remove(seq)
        self._finish(seq, reason)

    def _remove(self, seq: Sequence) -> None:
        """Out of the queues, its blocks back to the pool."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.running:
            self.running.remove(seq)
        self._by_id.pop(seq.id, None)
        self._drop_blocks(seq)

    def _drop_blocks(self, seq: Sequence) -> None:
        self.pool.release(seq.blocks)
        seq.blocks, seq.content_ids, seq.computed = [], [], 0

    @staticmethod
    def _finish(seq: Sequence, reason: str) -> None:
        text = seq.stream.finish()
        seq.handle._emit(TokenEvent(seq.index, None, text, None, reason))
        seq.handle._complete(seq.index, seq.completion(reason))


def _thinking(seq: Sequence) -> bool:
    """Inside a reasoning block the prompt opened: a constraint waits for the answer after it."""
    return seq.thinking is not None and seq.thinking.inside
