"""A batch over hostile input: bad rows are skipped with their line, the rest runs, and OUT and the store agree."""
import json

from app.batch import BatchJob, run_batch, start_or_resume
from app.batch_input import read_batch_input
from app.runner import StrategyOptions
from app.store import Store
from prompts.trace import RunInfo
from tests.prompts.scripted import ScriptedChatModel

LONE = "\ud800"


def test_out_and_the_store_agree_on_what_ran(tmp_path):
    rows = [json.dumps({"id": 1, "question": "One?", "answer": "5"}), json.dumps({"id": "1", "question": "Dup?"}),
            json.dumps({"id": "s", "question": f"Lone {LONE}?"}), "[" * 100_000, "{broken",
            json.dumps({"id": "two", "question": "Two?"}), json.dumps({"question": "Three?", "answer": 5})]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode())
    source = read_batch_input(path)
    assert [q.id for q in source.questions] == ["1", "two", "line-7"]
    assert [p.split(":")[0] for p in source.problems] == ["line 2", "line 3", "line 4", "line 5"]
    store = Store(tmp_path / "home" / "reason.db")
    job = BatchJob(source, ["direct", "cot"], tmp_path / "out.jsonl", concurrency=3, options=StrategyOptions())
    batch_id = start_or_resume(job, store, {})
    model = ScriptedChatModel().enqueue(*[f"The answer is Paris {LONE}."] * 6)  # a model that emits a lone surrogate
    assert run_batch(job, store, batch_id, model, RunInfo(model_id="scripted", backend="test")) == "finished"
    records = [json.loads(line) for line in job.out_path.read_text(encoding="utf-8").splitlines()]
    runs = store.search_runs(batch_id=batch_id, limit=None)
    written = {(r["run_id"], r["id"], r["strategy"], r["status"], r["predicted"], r["error"]) for r in records}
    stored = {(r["id"], r["question_id"], r["strategy"], r["status"], r["answer"], r["error"]) for r in runs}
    assert written == stored and len(written) == 6
    assert all(r["predicted"].endswith("Paris \ufffd") for r in records)  # stored, not refused; alike in both
    assert store.get_batch(batch_id)["done"] == 6 and all(r["status"] != "running" for r in runs)
