"""The Chat page's live run: tokens stream into it, steps show as they finish, and Stop really cancels.

Driven through `AppState.ask` on the tiny model, as the page drives it (without the browser).
"""
import pytest

from app.runner import StrategyOptions
from app.settings import Settings
from app.ui.chat_run import live_trace
from app.ui.live_run import STOPPED, LiveRun
from app.ui.state import AppState


class StopAt(LiveRun):
    """Presses Stop itself: after `tokens` streamed tokens, or when model call number `call` starts."""

    def __init__(self, tokens: int | None = None, call: int | None = None):
        super().__init__()
        self.at_tokens, self.at_call = tokens, call

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:
        if self.at_call is not None and len(self.calls) + 1 >= self.at_call:
            self.stop()
        super().on_chat_model_start(serialized, messages, **kwargs)

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        super().on_llm_new_token(token, **kwargs)
        if self.at_tokens is not None and sum(c.tokens for c in self.calls.values()) >= self.at_tokens:
            self.stop()


@pytest.fixture(scope="module")
def state(tiny_model, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("live-home"), model_path=None, device="cpu", dtype="float32")
    state = AppState.open(settings, tiny_model)
    yield state
    state.engine.close()


@pytest.fixture
def submitted(state, monkeypatch):
    """The engine request handles of each call."""
    handles, submit = [], state.engine.submit
    monkeypatch.setattr(state.engine, "submit", lambda *args: handles.append(submit(*args)) or handles[-1])
    return handles


def assert_cancelled(state, handles) -> None:
    assert handles and all(h.result(timeout=30)[0].finish_reason == "cancelled" for h in handles)
    assert state.engine.stats()["running"] == 0


def ask(state, live, strategy="cot", max_tokens=200, k=1):
    sampling = {"max_tokens": max_tokens, "temperature": 0.0, "seed": 0}  # self-consistency samples are seeded too
    run_id, trace = state.ask("How many legs do 3 spiders have?", strategy, None, sampling,
                              StrategyOptions(self_consistency=k), live=live)
    return state.store.get_run(run_id), trace


def test_tokens_stream_into_the_live_run_and_match_the_stored_step(state):
    live = LiveRun()
    run, trace = ask(state, live, max_tokens=16)
    assert run["status"] in ("ok", "no_answer") and live.traces == [trace]
    [call] = live.calls.values()
    assert call.tokens > 1 and call.seconds is not None and call.error is None
    assert call.text == run["steps"][0]["output"]
    assert live.pending_calls() == []
    shown = live_trace(live, "cot")
    assert "Chain of thought" in shown and "reasoning" in shown and "Q:" not in shown  # "Q:" marks a finished trace
    logprobs = run["steps"][0]["meta"]["logprobs"]  # the page's runs keep each token's probability
    assert len(logprobs) == run["steps"][0]["completion_tokens"] and all(len(top) == 5 for _, _, top in logprobs)


def test_a_call_still_generating_shows_in_the_live_trace():
    live = LiveRun()
    live.on_chat_model_start({}, [[]], run_id="a")
    live.on_llm_new_token("Three spiders", run_id="a")
    live.on_llm_new_token(" have", run_id="a")
    shown = live_trace(live, "cot")
    assert "generating…" in shown and "2 tokens" in shown and "Three spiders have" in shown
    assert live.latest_text() == "Three spiders have"


def test_stop_cancels_generation_and_the_run_is_stored_as_stopped(state, submitted):
    live = StopAt(tokens=3)
    live.count_tokens = state.count_tokens
    run, _ = ask(state, live, max_tokens=400)
    assert run["status"] == "stopped" and STOPPED in run["error"]
    assert run["duration_ms"] >= run["steps"][0]["duration_ms"] > 0
    [step] = run["steps"]
    assert step["name"] == "interrupted call" and step["error"] is None and step["meta"]["finish_reason"] == "stopped"
    assert 3 <= step["completion_tokens"] < 10 and step["output"]  # it stopped at the next token, not at 400
    assert step["prompt_tokens"] > 100 and run["prompt_tokens"] == step["prompt_tokens"]  # real counts, not 0
    assert_cancelled(state, submitted)


def test_stop_cancels_every_sample_of_self_consistency(state, submitted):
    run, _ = ask(state, StopAt(tokens=6), max_tokens=400, k=3)
    assert run["status"] == "stopped" and STOPPED in run["error"]
    assert all(s["completion_tokens"] < 50 for s in run["steps"])
    assert len(submitted) == 3
    assert_cancelled(state, submitted)


def test_a_stopped_run_keeps_the_steps_done_before_stop(state):
    run, _ = ask(state, StopAt(call=2), strategy="pal", max_tokens=24)  # PAL: program, sandbox, then a fix call
    assert run["status"] == "stopped" and STOPPED in run["error"]
    kinds = [s["kind"] for s in run["steps"]]
    assert kinds[:2] == ["llm", "tool"], kinds
    assert run["steps"][0]["output"] and run["steps"][0]["completion_tokens"] > 0
