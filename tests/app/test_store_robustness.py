"""The trace store against hostile text (lone surrogates from a model or a PAL program) and concurrent first use."""
import multiprocessing
import sqlite3
import traceback

import pytest

from app.runner import record_run
from app.store import Store
from app.store.database import valid_text
from prompts.trace import RunInfo, Step, Trace
from tests.prompts.scripted import ScriptedChatModel

LONE = "\ud800"


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "home" / "reason.db")
    yield store
    store.close()


def hostile_trace() -> Trace:
    trace = Trace(question=f"why {LONE}?", strategy="pal", template_name="pal", template_version=1,
                  model_id=f"m{LONE}", backend="ours", sampling={f"k{LONE}": LONE})
    trace.add(Step(kind="tool", name="python", input=f"return '{LONE}'", output=f'{{"value": "{LONE}"}}',
                   error=f"ValueError: {LONE}", meta={"value": [LONE, {LONE: 1}]}))
    return trace.finish(LONE, error=f"bad {LONE}")


def test_a_lone_surrogate_anywhere_in_a_run_is_stored_not_refused(store):
    run_id = store.start_run(f"q {LONE}", "pal", expected=LONE, question_id=f"id{LONE}", sampling={"t": LONE})
    store.finish_run(run_id, hostile_trace(), correct=False)
    run = store.get_run(run_id)
    assert run["status"] == "error" and run["answer"] == "\ufffd" and run["error"] == "bad \ufffd"
    assert run["question"] == "q \ufffd" and run["question_id"] == "id\ufffd" and run["sampling"] == {"k\ufffd": "\ufffd"}
    step = run["steps"][0]
    assert (step["input"], step["error"], step["meta"]["value"]) == ("return '\ufffd'", "ValueError: \ufffd",
                                                                       ["\ufffd", {"\ufffd": 1}])
    assert store.search_runs(text="q")[0]["id"] == run_id


def test_fail_run_and_batches_and_templates_store_lone_surrogates_too(store):
    run_id = store.start_run("q", "pal")
    store.fail_run(run_id, f"RuntimeError: {LONE}")
    assert store.get_run(run_id)["error"] == "RuntimeError: \ufffd"
    batch_id = store.create_batch(f"in{LONE}.jsonl", "0" * 64, ["pal"], {"note": LONE}, 1)
    assert store.get_batch(batch_id)["input_name"] == "in\ufffd.jsonl"
    assert store.get_template("pal", store.save_template("pal", f"body {LONE}")) == "body \ufffd"


@pytest.mark.parametrize("text, clean", [
    ("plain", "plain"), ("café ✓", "café ✓"), (LONE, "\ufffd"), ("a\udfffb", "a\ufffdb"),
    ("\ud83d\ude00", "😀"),  # a valid pair, written as two code points, is joined
    ({"k\ud800": [("x", LONE)], "n": 1}, {"k\ufffd": [("x", "\ufffd")], "n": 1}),
])
def test_valid_text(text, clean):
    assert valid_text(text) == clean


def _open_together(path: str, rounds: int, barrier, failures) -> None:
    """One process of several: open a fresh store at the same moment as the others, then write to it."""
    for n in range(rounds):
        barrier.wait()
        try:
            store = Store(f"{path}/{n}/reason.db")
            store.start_run("q", "direct")
            store.close()
        except Exception:  # noqa: BLE001 - every failure is the finding; the parent reports them
            failures.put(traceback.format_exc(limit=3))
    failures.put(None)


@pytest.mark.slow
def test_processes_opening_a_fresh_store_at_once_all_succeed(tmp_path):
    """Without the opening lock, about 1 in 60 of these openings failed with `database is locked` at
    `PRAGMA journal_mode=WAL` (SQLite's busy handler does not cover the switch to WAL)."""
    processes, rounds = 4, 60
    context = multiprocessing.get_context("spawn")
    barrier, failures = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_open_together, args=(str(tmp_path), rounds, barrier, failures))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    reports = []
    while len([r for r in reports if r is None]) < processes:
        reports.append(failures.get(timeout=300))
    for worker in workers:
        worker.join(timeout=60)
    assert [r for r in reports if r is not None] == []
    for n in range(rounds):
        with sqlite3.connect(tmp_path / str(n) / "reason.db") as conn:
            assert conn.execute("SELECT count(*) FROM run").fetchone() == (processes,)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_pal_run_whose_program_returns_or_raises_a_lone_surrogate_is_stored(store):
    model = ScriptedChatModel().enqueue("\n    return 'x\\ud800'\n", "\n    raise ValueError('\\ud800')\n",
                                        "\n    raise ValueError('\\ud800')\n")
    info = RunInfo(model_id="scripted", backend="test")
    returned = record_run(store, "Return it?", "pal", model, info)
    raised = record_run(store, "Raise it?", "pal", model, info)
    assert store.get_run(returned.run_id)["answer"] == "x\ufffd"
    stored = store.get_run(raised.run_id)
    assert stored["status"] == "error" and "\\ud800" in stored["error"]  # the sandbox escaped it visibly
    assert all(run["status"] != "running" for run in store.search_runs(limit=None))
