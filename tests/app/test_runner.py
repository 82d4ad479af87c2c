"""record_run, the one way a run is made: a failure the user caused is stored as data; a bug is stored, then raised."""
import json
import threading
from typing import Any

import httpx
import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from app.batch import BatchJob, run_batch, start_or_resume
from app.batch_input import BatchInput, Question
from app.errors import RunStopped
from app.runner import StrategyOptions, record_run
from app.store import Store
from prompts.template import TemplateError, load_shipped
from prompts.trace import RunInfo

INFO = RunInfo(model_id="scripted", backend="test")


class ByQuestion(BaseChatModel):
    """Answers by the question in the prompt: a reply text, an exception to raise, or a function giving either."""

    replies: dict[str, Any] = Field(default_factory=dict)
    default: str = "The answer is 5."

    @property
    def _llm_type(self) -> str:
        return "by-question"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        prompt = str(messages[-1].content)
        reply = next((r for q, r in self.replies.items() if q in prompt), self.default)
        reply = reply() if callable(reply) else reply
        if isinstance(reply, BaseException):
            raise reply
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "reason.db")
    yield store
    store.close()


def unreachable() -> Exception:
    return openai.APIConnectionError(request=httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions"))


def test_an_answer_is_stored_and_scored(store):
    run_id, trace, correct = record_run(store, "What is 2 + 3?", "cot", ByQuestion(), INFO, expected="5")
    run = store.get_run(run_id)
    assert (trace.answer, correct) == ("5", True)
    assert (run["status"], run["answer"], run["correct"], run["template_name"], run["template_version"]) == (
        "ok", "5", True, "cot", 1)
    assert len(run["steps"]) == 1


@pytest.mark.parametrize("failure", [unreachable(), ConnectionError("refused"), TimeoutError("slow"),
                                     ValueError("top_p must be in (0, 1]")],
                         ids=lambda e: type(e).__name__)
def test_a_failure_the_user_caused_is_an_error_run_not_an_exception(store, failure):
    run_id, trace, correct = record_run(store, "q?", "direct", ByQuestion(replies={"q?": failure}), INFO, expected="1")
    run = store.get_run(run_id)
    assert trace.status == run["status"] == "error" and correct is False
    assert run["error"].startswith(type(failure).__name__)


def test_a_stop_is_a_stopped_run_not_an_error(store):
    run_id, trace, _ = record_run(store, "q?", "cot", ByQuestion(replies={"q?": RunStopped("stopped by the user")}), INFO)
    run = store.get_run(run_id)
    assert trace.status == run["status"] == "stopped" and run["error"] == "stopped by the user"


def test_earlier_turns_go_into_the_prompt_before_the_question(store):
    model = ByQuestion(replies={"And 2 more?": "The answer is 9."})
    _, trace, _ = record_run(store, "And 2 more?", "cot", model, INFO, history=[("Tom has 7. He gets 0.", "7")])
    prompt = trace.steps[0].input
    assert prompt.index("Tom has 7. He gets 0.") < prompt.index("ai: 7") < prompt.index("And 2 more?")
    assert trace.counters["earlier_turns"] == 1


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), KeyError("missing"), AttributeError("no such")],
                         ids=lambda e: type(e).__name__)
def test_a_bug_is_stored_as_an_error_run_and_raised(store, bug):
    with pytest.raises(type(bug)):
        record_run(store, "q?", "cot", ByQuestion(replies={"q?": bug}), INFO)
    (run,) = store.search_runs(limit=None)
    assert run["status"] == "error" and run["error"].startswith(type(bug).__name__) and run["duration_ms"] >= 0


def test_a_template_for_another_strategy_is_refused_before_any_run(store):
    with pytest.raises(TemplateError, match="is for strategy 'cot'"):
        record_run(store, "q?", "pal", ByQuestion(), INFO, load_shipped("cot"))
    assert store.search_runs(limit=None) == []


def test_a_run_left_running_is_completed_not_duplicated(store):
    stale = store.start_run("q?", "direct")
    run_id, _, _ = record_run(store, "q?", "direct", ByQuestion(), INFO, run_id=stale)
    assert run_id == stale and [r["status"] for r in store.search_runs(limit=None)] == ["ok"]


def batch(store, tmp_path, questions):
    source = BatchInput(tmp_path / "in.jsonl", "sha", [Question(f"q{i}", q, "5") for i, q in enumerate(questions)], [])
    job = BatchJob(source, ["direct"], tmp_path / "out.jsonl", concurrency=2, options=StrategyOptions())
    return job, start_or_resume(job, store, {})


def test_a_batch_survives_a_question_the_server_refused(store, tmp_path):
    job, batch_id = batch(store, tmp_path, ["ok one?", "refused?", "ok two?"])
    model = ByQuestion(replies={"refused?": unreachable()})
    assert run_batch(job, store, batch_id, model, INFO) == "finished"
    records = {r["id"]: r for r in map(json.loads, job.out_path.read_text().splitlines())}
    assert {k: r["status"] for k, r in records.items()} == {"q0": "ok", "q1": "error", "q2": "ok"}
    counts = store.get_batch(batch_id)
    assert (counts["status"], counts["done"], counts["errors"], counts["correct"]) == ("finished", 3, 1, 2)


def test_a_bug_stops_the_batch_loudly_and_leaves_it_consistent(store, tmp_path):
    job, batch_id = batch(store, tmp_path, [f"question {i}?" for i in range(6)])
    bug_raised = threading.Event()

    def bug():
        bug_raised.set()
        return TypeError("a bug")

    # question 0 is still running when question 1 hits the bug: it must finish, be stored and be written
    model = ByQuestion(replies={"question 0?": lambda: bug_raised.wait(10) and "The answer is 5.", "question 1?": bug})
    with pytest.raises(TypeError, match="a bug"):
        run_batch(job, store, batch_id, model, INFO)
    runs = {r["question_id"]: r for r in store.search_runs(batch_id=batch_id, limit=None)}
    assert (runs["q0"]["status"], runs["q1"]["status"], runs["q1"]["error"]) == ("ok", "error", "TypeError: a bug")
    assert all(r["status"] == "ok" for q, r in runs.items() if q != "q1")  # none left running
    written = [json.loads(line)["run_id"] for line in job.out_path.read_text().splitlines()]
    assert sorted(written) == sorted(r["id"] for r in runs.values() if r["status"] == "ok")
    batch_row = store.get_batch(batch_id)
    assert (batch_row["status"], batch_row["done"], batch_row["errors"]) == ("interrupted", len(runs), 1)  # resumable
