"""Continuous batching: requests join and leave between steps, over the paged KV pool.

The engine's compute thread (engine/compute.py) owns the model. Each step it
1. takes new requests and cancellations from callers (any thread),
2. admits waiting sequences while KV blocks last, reusing cached prefix blocks; a sequence whose
   next prefix block is being computed right now by another waits, so the shared few-shot
   prompt is computed once and the others find it in the cache,
3. runs one decode forward for every running sequence (one new token each) and one prefill
   forward for up to `prefill_chunk` prompt tokens of sequences still reading their prompt, so a
   long prompt never stalls the others for more than a chunk,
4. samples each finished row with its own SamplingParams and streams the text.
When the pool runs dry mid-decode the youngest other sequence is preempted: its blocks are
freed and it is recomputed later from its tokens (nothing it generated is lost).
"""
from __future__ import annotations

import itertools
import logging
import queue
from collections import deque
from dataclasses import dataclass, field

import torch

from .compute import COMPUTE
from .generate import Completion, ContextLengthError
from .kv_pool import BlockPool, PoolExhausted
from .model import Transformer
from .paged_attention import PagedBatch
from .request import QueueFullError, RequestHandle, TokenEvent
from .sampling import SamplerState, SamplingParams, sample, top_logprobs
from .text_stream import TextStream
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

# Below this many tokens a forward pass is dispatch-bound: one CPU thread is faster than several,
# whose synchronisation costs more than the tiny matmuls gain (measured: decode at batch 1 runs
# 45 tok/s on one thread of this 2-core CPU, 26 on two; batch 16 runs 166 vs 210).
SMALL_STEP_TOKENS = 8
CPU_THREADS = torch.get_num_threads()  # read before any scheduler lowers it


@dataclass(eq=False)
class _Sequence:
    handle: RequestHandle
    index: int
    tokens: list[int]  # prompt + generated
    sampler: SamplerState
    stream: TextStream
    prompt_len: int
    admitted_at: int = 0
    computed: int = 0  # tokens whose K/V are in the pool
    blocks: list[int] = field(default_factory=list)
    content_ids: list[int] = field(default_factory=list)  # of the leading blocks published to the cache
    logprobs: list[dict] = field(default_factory=list)
    cumulative_logprob: float = 0.0

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.prompt_len:]

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.computed


class Scheduler:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, pool: BlockPool, *, max_batch: int = 64,
                 prefill_chunk: int = 512, max_waiting: int = 1024):
        self.model, self.tokenizer, self.pool = model, tokenizer, pool
        self.max_batch, self.prefill_chunk, self.max_waiting = max_batch, prefill_chunk, max_waiting
        self.context = model.args.max_seq_len
        self.device = model.tok_embeddings.weight.device
        self.max_threads = CPU_THREADS
        self._inbox: queue.Queue = queue.Queue()
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._ids = itertools.count(1)
        self._admissions = itertools.count()
        self._waiting_requests = 0
        self._closed = False
        COMPUTE.attach(self)

    # ---- callers (any thread) ----
    def submit(self, prompt: list[int], params: SamplingParams) -> RequestHandle:
        params.validate(self.model.args.vocab_size)
        if not prompt:
            raise ValueError("prompt is empty")
        if len(prompt) >= self.context:
            raise ContextLengthError(f"the prompt has {len(prompt)} tokens; the model's context is {self.context}")
        if params.num_beams > 1:
            raise ValueError("num_beams > 1 is not served by the scheduler; use Engine.generate")
        needed = self.pool.blocks_for(len(prompt) + 1)
        if needed > self.pool.usable_blocks:
            raise ContextLengthError(f"the prompt needs {needed} KV blocks; the pool has {self.pool.usable_blocks}"
                                     " (raise the KV cache budget)")
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        if self._waiting_requests >= self.max_waiting:
            raise QueueFullError(f"{self._waiting_requests} requests are waiting (limit {self.max_waiting})")
        handle = RequestHandle(f"req-{next(self._ids)}", list(prompt), params, self)
        self._waiting_requests += 1
        self._post("submit", handle)
        return handle

    def stats(self) -> dict:
        return {"waiting": self._waiting_requests, "running": len(self._running), **self.pool.stats()}

    def close(self) -> None:
        """Fail whatever is still queued or running and refuse new requests."""
        self._closed = True
        self._post("close", None)

    def _post(self, kind: str, handle: RequestHandle | None) -> None:
        self._inbox.put((kind, handle))
        COMPUTE.wake()

    # ---- on the compute thread ----
    def has_work(self) -> bool:
        return bool(self._waiting or self._running or not self._inbox.empty())

    def step_once(self) -> None:
        """Take new requests and cancellations, admit what fits, run one step."""
        try:
            self._drain_inbox()
            self._admit()
            self._step()
        except Exception as exc:  # a failed step fails its requests, never the thread
            log.exception("scheduler step failed")
            self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for seq in self._running + list(self._waiting):
            self._drop(seq)
            seq.handle._fail(exc)
        self._running.clear()
        self._waiting.clear()
        self._count_waiting()

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, handle = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "close":
                self._fail_all(RuntimeError("the engine was closed"))
            elif kind == "submit":
                self._enqueue(handle)
            elif kind == "cancel":
                self._cancel(handle)

    def _enqueue(self, handle: RequestHandle) -> None:
        p = handle.params
        for j in range(p.n):
            seed = None if p.seed is None else p.seed + j
            seq = _Sequence(handle, j, list(handle.prompt), SamplerState.start(p, handle.prompt, seed),
                            TextStream(p.stop), len(handle.prompt))
            self._waiting.append(seq)

    def _cancel(self, handle: RequestHandle) -> None:
        for seq in [s for s in self._running + list(self._waiting) if s.handle is handle]:
            if seq in self._waiting:
                self._waiting.remove(seq)
            else:
                self._running.remove(seq)
            self._drop(seq)
            self._finish(seq, "cancelled")
        self._count_waiting()

    def _count_waiting(self) -> None:
        self._waiting_requests = len({id(s.handle) for s in self._waiting})

    def _admit(self) -> None:
        deferred = []
        prefilling = [s for s in self._running if s.pending > 1]
        while self._waiting and len(self._running) < self.max_batch:
            seq = self._waiting.popleft()
            if any(self._shares_unpublished_block(seq, other) for other in prefilling):
                deferred.append(seq)  # part of its prefix is being computed right now: wait and reuse it
                continue
            if not self._take_blocks(seq):
                self._waiting.appendleft(seq)
                break
            seq.admitted_at = next(self._admissions)
            self._running.append(seq)
            prefilling.append(seq)
        self._waiting.extendleft(reversed(deferred))
        self._count_waiting()

    def _shares_unpublished_block(self, seq: _Sequence, other: _Sequence) -> bool:
        """Whether `seq` starts with the published blocks of `other` and also its next, not yet computed, block."""
        end = (len(other.content_ids) + 1) * self.pool.block_size
        return len(seq.tokens) > end and len(other.tokens) >= end and seq.tokens[:end] == other.tokens[:end]

    def _take_blocks(self, seq: _Sequence) -> bool:
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
        return True

    def _step(self) -> None:
        decoding = [s for s in self._running if s.pending == 1]
        prefilling = [s for s in self._running if s.pending > 1]
        if decoding:
            self._ensure_room(decoding)
            decoding = [s for s in decoding if s in self._running]
            if decoding:
                self._forward(decoding, [1] * len(decoding))
        if prefilling:
            budget, rows, lengths = self.prefill_chunk, [], []
            for seq in sorted(prefilling, key=lambda s: s.admitted_at):
                if budget <= 0 or seq not in self._running:
                    continue
                take = min(seq.pending, budget)
                rows.append(seq)
                lengths.append(take)
                budget -= take
            if rows:
                self._forward(rows, lengths)

    def _ensure_room(self, decoding: list[_Sequence]) -> None:
        """Every decoding sequence gets a slot for its next token, preempting the youngest if needed."""
        bs = self.pool.block_size
        for seq in sorted(decoding, key=lambda s: s.admitted_at):
            if seq not in self._running or len(seq.blocks) * bs > len(seq.tokens):
                continue
            while True:
                try:
                    seq.blocks += self.pool.allocate(1)
                    break
                except PoolExhausted:
                    victim = max((s for s in self._running if s is not seq), key=lambda s: s.admitted_at, default=None)
                    if victim is None:  # alone and the whole pool is not enough: stop it here
                        self._retire(seq, "length")
                        break
                    self._preempt(victim)

    def _preempt(self, seq: _Sequence) -> None:
        log.info("KV pool full: %s (sample %d) waits and will be recomputed", seq.handle.id, seq.index)
        self._running.remove(seq)
        self._drop(seq)
        self._waiting.appendleft(seq)
        self._count_waiting()

    def _drop(self, seq: _Sequence) -> None:
        """Return a sequence's blocks to the pool."""
        self.pool.release(seq.blocks)
        seq.blocks, seq.content_ids, seq.computed = [], [], 0

    @torch.inference_mode()
    def _forward(self, rows: list[_Sequence], lengths: list[int]) -> None:
        bs = self.pool.block_size
        starts = [s.computed for s in rows]
        width = max(lengths)
        tokens = torch.zeros(len(rows), width, dtype=torch.long)
        positions = torch.zeros(len(rows), width, dtype=torch.long)
        for b, (seq, start, n) in enumerate(zip(rows, starts, lengths)):
            tokens[b, :n] = torch.tensor(seq.tokens[start:start + n])
            positions[b, :n] = torch.arange(start, start + n)
            positions[b, n:] = start + n - 1
        shared = self._shared_blocks(rows, starts)
        args = self.model.args
        paged = PagedBatch.build(self.pool.k, self.pool.v, [s.blocks for s in rows], starts, lengths, shared, bs,
                                 self.pool.k.dtype, args.n_heads // args.n_kv_heads)
        logits_at = torch.tensor([n - 1 for n in lengths], device=self.device)
        self._set_threads(sum(lengths))
        logits = self.model.forward_paged(tokens.to(self.device), positions.to(self.device), paged, logits_at)
        ready = []
        for b, (seq, n) in enumerate(zip(rows, lengths)):
            seq.computed += n
            self._publish_full_blocks(seq)
            if seq.pending == 0:
                ready.append(b)
        if ready:
            self._sample([rows[b] for b in ready], logits[ready])

    def _set_threads(self, tokens: int) -> None:
        if self.device.type != "cpu":
            return
        wanted = 1 if tokens < SMALL_STEP_TOKENS else self.max_threads
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def _shared_blocks(self, rows: list[_Sequence], starts: list[int]) -> int:
        """How many leading blocks every row has in common (all cached, so all computed)."""
        if len(rows) < 2:
            return 0
        first = rows[0].blocks
        limit = min(min(len(s.content_ids) for s in rows), min(starts) // self.pool.block_size)
        count = 0
        while count < limit and all(s.blocks[count] == first[count] for s in rows):
            count += 1
        return count

    def _publish_full_blocks(self, seq: _Sequence) -> None:
        bs = self.pool.block_size
        while (len(seq.content_ids) + 1) * bs <= seq.computed:
            i = len(seq.content_ids)
            parent = seq.content_ids[-1] if seq.content_ids else 0
            seq.content_ids.append(self.pool.register(seq.blocks[i], parent, seq.tokens[i * bs:(i + 1) * bs]))

    def _sample(self, rows: list[_Sequence], logits: torch.Tensor) -> None:
        next_ids = sample(logits, [s.sampler for s in rows])
        want = max((s.sampler.params.logprobs or 0) for s in rows)
        scored = top_logprobs(logits, next_ids, want)
        eos = self.tokenizer.eos_id
        for seq, token, score in zip(rows, next_ids.tolist(), scored):
            params = seq.sampler.params
            if token == eos or token in params.stop_token_ids:
                self._retire(seq, "stop")
                continue
            seq.sampler.accept(token)
            seq.tokens.append(token)
            seq.cumulative_logprob += score["logprob"]
            logprob = None
            if params.logprobs is not None:
                logprob = {**score, "top": dict(list(score["top"].items())[:params.logprobs])}
                seq.logprobs.append(logprob)
            text = seq.stream.feed(self.tokenizer.token_bytes(token))
            seq.handle._emit(TokenEvent(seq.index, token, text, logprob))
            if seq.stream.stopped:
                self._retire(seq, "stop")
            elif len(seq.generated) >= params.max_tokens or len(seq.tokens) >= self.context:
                self._retire(seq, "length")

    def _retire(self, seq: _Sequence, reason: str) -> None:
        self._running.remove(seq)
        self._drop(seq)
        self._finish(seq, reason)

    def _finish(self, seq: _Sequence, reason: str) -> None:
        text = seq.stream.finish()
        seq.handle._emit(TokenEvent(seq.index, None, text, None, reason))
        params = seq.sampler.params
        seq.handle._complete(seq.index, Completion(
            seq.stream.text, seq.generated, reason, seq.prompt_len, 0, seq.index, seq.cumulative_logprob,
            seq.logprobs if params.logprobs is not None else None))

