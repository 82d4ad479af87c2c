"""The scheduler without a model: a fake runner returns chosen tokens, the tests read the plans.

Admission order and the batch limit, chunked prefill, preemption and recompute when the pool
runs dry, deferral behind a prefix block being computed, the stop rule, cancel and the bounded queue.
"""
import itertools

import pytest
import torch

from engine.kv_pool import BlockPool
from engine.request import QueueFullError, RequestHandle
from engine.sampling import SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Sequence, ends_on, stop_reason
from engine.step_loop import StepLoop
from engine.step_plan import SampledToken, StepOutput

BS, EOS, CONTEXT = 4, 0, 64


class FakeRunner:
    """Samples `token` (or the row's forced token) for every row that asks, and remembers every plan."""

    def __init__(self, token: int = 7):
        self.token, self.plans = token, []

    def choose(self, row) -> int:
        return self.token

    def execute(self, plan):
        self.plans.append(plan)
        return StepOutput({r.seq_id: [SampledToken(r.forced_token if r.forced_token is not None else self.choose(r), -0.5)]
                           for r in plan.rows if r.sampler is not None})


def scheduler(blocks: int = 32, **kw) -> Scheduler:
    pool = BlockPool(1, blocks, BS, 1, 1, torch.float32, torch.device("cpu"))
    return Scheduler(pool, lambda t: f"<{t}>".encode(), EOS, CONTEXT, **kw)


_ids = itertools.count()


def submit(s: Scheduler, prompt: list[int], **params) -> RequestHandle:
    handle = RequestHandle(f"r{next(_ids)}", prompt, SamplingParams(**{"max_tokens": 3, **params}), s.cancel)
    s.add(handle)
    return handle


def run(s: Scheduler, runner: FakeRunner, max_steps: int = 100) -> None:
    for _ in range(max_steps):
        if not s.has_work():
            return
        plan = s.schedule()
        s.update(plan, runner.execute(plan))
    raise AssertionError("the scheduler did not finish")


def seq_ids_of(plan) -> list[list[int]]:
    return [[r.seq_id for r in b.rows] for b in plan.batches]


def test_requests_are_admitted_in_order_up_to_the_batch_limit():
    s, runner = scheduler(max_batch=2), FakeRunner()
    handles = [submit(s, [1, 2, 3]) for _ in range(3)]
    first = s.schedule()
    assert seq_ids_of(first) == [[1, 2]] and not s.running[0].pending == 0
    s.update(first, runner.execute(first))
    run(s, runner)
    assert all(h.result(timeout=0)[0].token_ids == [7, 7, 7] for h in handles)
    admitted = [r.seq_id for p in runner.plans for r in p.rows if r.start == 0]
    assert admitted == [1, 2, 3]  # the third waited for a free place, then came in
    assert s.pool.stats()["kv_blocks_in_use"] == 0


def test_a_long_prompt_is_prefilled_in_chunks_and_sampled_once():
    s, runner = scheduler(prefill_chunk=4), FakeRunner()
    handle = submit(s, list(range(1, 11)), max_tokens=1)
    run(s, runner)
    chunks = [(r.start, len(r.token_ids), r.sampler is not None) for p in runner.plans for r in p.rows]
    assert chunks == [(0, 4, False), (4, 4, False), (8, 2, True)]
    assert handle.result(timeout=0)[0].token_ids == [7]


def test_decoding_and_prefilling_share_a_step():
    s, runner = scheduler(prefill_chunk=4), FakeRunner()
    submit(s, [1, 2], max_tokens=5)
    plan = s.schedule()
    s.update(plan, runner.execute(plan))  # the first is now decoding
    submit(s, list(range(20, 30)))
    plan = s.schedule()
    assert [[(r.seq_id, len(r.token_ids)) for r in b.rows] for b in plan.batches] == [[(1, 1)], [(2, 4)]]


def test_the_youngest_is_preempted_when_the_pool_runs_dry_and_recomputed_later():
    # 5 usable blocks of 4: two 7-token prompts take 2 blocks each; growing past 8 tokens needs a
    # third block each, and only one is free: the younger gives its blocks back and waits.
    s, runner = scheduler(blocks=6), FakeRunner()
    old = submit(s, [1, 2, 3, 4, 5, 6, 8], max_tokens=6)
    young = submit(s, [9, 9, 9, 9, 9, 9, 9], max_tokens=6)
    run(s, runner)
    assert old.result(timeout=0)[0].token_ids == young.result(timeout=0)[0].token_ids == [7] * 6
    prefills = [r for p in runner.plans for r in p.rows if r.seq_id == 2 and len(r.token_ids) > 1]
    assert len(prefills) == 2  # read once, preempted, read again
    assert prefills[1].token_ids[-1] == 7  # with the token it had generated (its first block came from the cache)
    assert prefills[1].start + len(prefills[1].token_ids) == 8
    assert s.pool.stats()["kv_blocks_in_use"] == 0


def test_a_request_waits_for_a_prefix_block_being_computed_then_reuses_it():
    s, runner = scheduler(prefill_chunk=4), FakeRunner()
    shared = [5, 6, 7, 8, 1, 2, 3, 4]
    submit(s, shared + [10], max_tokens=1)
    submit(s, shared + [20], max_tokens=1)
    first = s.schedule()
    assert seq_ids_of(first) == [[1]]  # the second waits: its first block is being computed now
    s.update(first, runner.execute(first))
    run(s, runner)
    second = [r for p in runner.plans for r in p.rows if r.seq_id == 2]
    assert second[0].start >= BS  # it started after the published block(s) it found in the cache


def test_cancel_finishes_the_request_and_frees_its_blocks():
    s, runner = scheduler(), FakeRunner()
    handle = submit(s, [1, 2, 3], max_tokens=50)
    for _ in range(3):
        plan = s.schedule()
        s.update(plan, runner.execute(plan))
    s.cancel(handle)
    completion = handle.result(timeout=0)[0]
    assert completion.finish_reason == "cancelled" and completion.token_ids == [7, 7, 7]
    assert not s.has_work() and s.pool.stats()["kv_blocks_in_use"] == 0


def test_eos_stop_ids_stop_strings_and_length_end_a_sequence():
    for token, params, reason, kept in [(EOS, {}, "stop", []), (4, {"stop_token_ids": [4]}, "stop", []),
                                        (7, {"stop": ["<7>"]}, "stop", [7]), (7, {"max_tokens": 2}, "length", [7, 7])]:
        s = scheduler()
        handle = submit(s, [1, 2, 3], **params)
        run(s, FakeRunner(token))
        completion = handle.result(timeout=0)[0]
        assert (completion.finish_reason, completion.token_ids) == (reason, kept), params
        assert "<7>" not in completion.text or "stop" not in params  # a stop string is cut from the text


def test_the_stop_rule_alone():
    seq = Sequence(1, None, 0, [1, 2, 3], None, None, 3)
    seq.sampler = type("S", (), {"params": SamplingParams(max_tokens=2, stop_token_ids=[9])})()
    seq.stream = type("T", (), {"stopped": False})()
    assert ends_on(EOS, seq, EOS) and ends_on(9, seq, EOS) and not ends_on(5, seq, EOS)
    assert stop_reason(seq, CONTEXT) is None
    seq.tokens += [5, 5]
    assert stop_reason(seq, CONTEXT) == "length"
    seq.tokens = [1, 2, 3, 5]
    assert stop_reason(seq, context=4) == "length"
    seq.stream.stopped = True
    assert stop_reason(seq, CONTEXT) == "stop"


def test_the_queue_is_bounded_and_counts_exactly():
    s = scheduler()
    loop = StepLoop(s, FakeRunner(), max_waiting=2)  # not attached to the compute thread: stepped here
    loop.submit([1, 2], SamplingParams(max_tokens=1))
    loop.submit([1, 3], SamplingParams(max_tokens=1))
    assert loop.stats()["waiting"] == 2
    with pytest.raises(QueueFullError):
        loop.submit([1, 4], SamplingParams(max_tokens=1))
    while loop.has_work():
        loop.step_once()
    assert loop.stats()["waiting"] == 0 and loop.stats()["running"] == 0
    loop.submit([1, 4], SamplingParams(max_tokens=1))


def test_a_prompt_that_never_fits_the_pool_is_refused():
    s = scheduler(blocks=3)  # 2 usable blocks: 8 tokens
    with pytest.raises(ValueError, match="KV blocks"):
        s.check_fits(8)
    s.check_fits(7)


def test_a_short_prompt_is_not_stuck_behind_a_long_one_and_the_long_one_never_starves():
    s, runner = scheduler(blocks=400, prefill_chunk=64), FakeRunner()
    long = submit(s, [1] + [9] * 600, max_tokens=1)
    plan = s.schedule()
    s.update(plan, runner.execute(plan))  # the long prompt has started
    short = submit(s, [1, 2, 3], max_tokens=1)
    plan = s.schedule()
    rows = {r.seq_id: r for r in plan.rows}
    assert rows[2].sampler is not None  # the short prompt is read whole and answered in this very step
    assert len(rows[1].token_ids) >= 32  # the long one still gets half the budget or more
    s.update(plan, runner.execute(plan))
    assert short.result(timeout=0)[0].token_ids == [7]
    for i in range(60):  # a stream of short requests: the long prompt keeps moving until it is read
        submit(s, [1, 2, 3 + i], max_tokens=1)
        plan = s.schedule()
        reading = [r for r in plan.rows if r.seq_id == 1]
        if not reading or reading[0].sampler is not None:
            break
        assert len(reading[0].token_ids) >= 32
        s.update(plan, runner.execute(plan))
    else:
        raise AssertionError("the long prompt starved")
    run(s, runner)
    assert long.result(timeout=0)[0].token_ids == [7]


def test_drafts_are_planned_only_while_few_sequences_decode():
    from engine.scheduler import MAX_DRAFT_ROWS

    s = scheduler(blocks=64)
    for _ in range(MAX_DRAFT_ROWS + 1):
        submit(s, [5, 6, 7, 5, 6, 7, 5, 6], max_tokens=8, draft_tokens=3)
    drafted = []
    while s.has_work():
        plan = s.schedule()
        decoding = [r for r in plan.rows if r.sampler is not None and len(r.token_ids) == 1 + len(r.draft)]
        drafted.append((len(decoding), sum(len(r.draft) for r in decoding)))
        s.update(plan, FakeRunner().execute(plan))
    assert all(d == 0 for rows, d in drafted if rows > MAX_DRAFT_ROWS)
    assert any(d for rows, d in drafted if rows <= MAX_DRAFT_ROWS)  # once the others finish, the last drafts
    assert any(rows > MAX_DRAFT_ROWS for rows, _ in drafted)


def test_drafting_backs_off_after_rejected_drafts_and_resumes_after_an_accepted_one():
    s, runner = scheduler(), FakeRunner()  # FakeRunner never confirms a draft: it emits one token per row
    handle = submit(s, [5, 6, 7, 5, 6, 7, 5, 6], max_tokens=40, draft_tokens=3)
    drafts = []
    while s.has_work():
        plan = s.schedule()
        drafts += [len(r.draft) for r in plan.rows if r.sampler is not None and len(r.token_ids) == 1 + len(r.draft)]
        s.update(plan, runner.execute(plan))
    assert handle.result(timeout=0)[0].token_ids == [7] * 40
    assert sum(1 for d in drafts if d) < 10  # without the back-off nearly every step would draft
