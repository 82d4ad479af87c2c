"""One batch over several OpenAI-compatible servers: both used, one killed mid-batch, nothing lost or duplicated;
retries on 429 and 5xx; every server gone stops the batch, and --resume finishes it on another server."""
import json
from pathlib import Path

import openai
import pytest
from click.testing import CliRunner
from langchain_core.messages import HumanMessage

from app.backends import BackendChoice, chat_model
from app.cli import cli
from app.fanout import FanOutChatModel, RetryPolicy, Server, ServerPool, ServersExhausted, without_client_retries
from app.settings import Settings
from app.store import Store
from tests.app.fake_openai import MODEL, fake_openai_server

N = 24


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REASON_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def questions(path: Path, n: int = N) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i}?", "answer": "5"}) + "\n"
                            for i in range(n)))
    return path


def batch(source: Path, out: Path, urls: list[str], *args: str):
    servers = [arg for url in urls for arg in ("--base-url", url)]
    return CliRunner().invoke(cli, ["batch", str(source), "--strategy", "direct", "--out", str(out), "--backend", "openai",
                                    "--model", MODEL, "--server-concurrency", "2", *servers, *args],
                              catch_exceptions=False)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_a_server_killed_mid_batch_loses_nothing_and_duplicates_nothing(home, tmp_path):
    source, out = questions(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    with fake_openai_server(delay_s=0.05, die_after=5) as doomed, fake_openai_server(delay_s=0.05) as steady:
        result = batch(source, out, [doomed.base_url, steady.base_url])
    assert result.exit_code == 0, result.output
    assert doomed.dead and doomed.chats == 5 and 0 < doomed.answered <= 5  # both used, the doomed one until it died
    assert doomed.answered + steady.answered == N  # every question answered exactly once, by someone
    written = records(out)
    assert sorted(r["id"] for r in written) == sorted(f"q{i}" for i in range(N))
    assert all(r["status"] == "ok" and r["correct"] for r in written)
    store = Store.open(Settings.from_env())
    runs = store.search_runs(batch_id=store.list_batches()[0]["id"], limit=None)
    assert len(runs) == N and {r["question_id"] for r in runs} == {f"q{i}" for i in range(N)}
    assert f"server {doomed.base_url}: " in result.output and "out of rotation" in result.output
    assert f"server {steady.base_url}: " in result.output and "in rotation" in result.output


def test_every_server_gone_stops_the_batch_and_resume_finishes_elsewhere(home, tmp_path):
    source, out = questions(tmp_path / "in.jsonl", 12), tmp_path / "out.jsonl"
    with fake_openai_server(die_after=3) as first, fake_openai_server(die_after=2) as second:
        stopped = batch(source, out, [first.base_url, second.base_url], "--retries", "3")
    assert stopped.exit_code == 1 and "every server is out of rotation" in stopped.output
    batch_id = Store.open(Settings.from_env()).list_batches()[0]["id"]
    assert f"--resume {batch_id}" in stopped.output
    done_before = {r["id"] for r in records(out) if r["status"] == "ok"}
    assert len(done_before) == first.answered + second.answered and 0 < len(done_before) <= 5
    with fake_openai_server() as third:  # the batch's configurations, on a server it has never seen
        resumed = CliRunner().invoke(cli, ["batch", str(source), "--out", str(out), "--resume", batch_id,
                                           "--base-url", third.base_url], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert third.answered == 12 - len(done_before)  # only what was not answered
    store = Store.open(Settings.from_env())
    runs = store.search_runs(batch_id=batch_id, limit=None)
    assert len(runs) == 12 and all(r["status"] == "ok" for r in runs)  # failed runs were completed, not duplicated
    assert store.get_batch(batch_id)["status"] == "finished"


class Flaky:
    """A chat model that fails the first calls with these errors, then answers."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0

    def _generate(self, messages, stop=None, **kwargs):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        with fake_openai_server() as server:
            model, _ = chat_model(BackendChoice("openai", MODEL, base_url=server.base_url))
            return model._generate(messages, stop=stop)


def status_error(kind, code: int):
    import httpx

    request = httpx.Request("POST", "http://x/v1/chat/completions")
    return kind("refused", response=httpx.Response(code, request=request), body=None)


def test_429_and_5xx_are_retried_and_a_bad_request_is_not():
    busy = Flaky(status_error(openai.RateLimitError, 429), status_error(openai.InternalServerError, 503))
    pool = ServerPool([Server("http://busy/v1", busy)], RetryPolicy(backoff_s=0.01, dead_after=3))
    reply = FanOutChatModel(pool).invoke([HumanMessage("hi")])
    assert reply.content == "The answer is 5." and busy.calls == 3
    assert pool.stats()[0] | {"last_error": ""} == {"url": "http://busy/v1", "requests": 3, "failures": 2,
                                                     "alive": True, "last_error": ""}
    refused = Flaky(status_error(openai.BadRequestError, 400))
    pool = ServerPool([Server("http://strict/v1", refused)], RetryPolicy(backoff_s=0.01))
    with pytest.raises(openai.BadRequestError):
        FanOutChatModel(pool).invoke([HumanMessage("hi")])
    assert refused.calls == 1 and pool.stats()[0]["alive"]


def test_a_server_that_keeps_failing_leaves_the_rotation():
    down = Flaky(*[openai.APIConnectionError(request=None)] * 5)
    pool = ServerPool([Server("http://down/v1", down)], RetryPolicy(backoff_s=0.01, dead_after=2, attempts=5))
    with pytest.raises(ServersExhausted, match="every server is out of rotation: http://down/v1"):
        FanOutChatModel(pool).invoke([HumanMessage("hi")])
    assert down.calls == 2 and not pool.stats()[0]["alive"]


def test_the_client_itself_does_not_retry():
    with fake_openai_server() as server:
        model, _ = chat_model(BackendChoice("openai", MODEL, base_url=server.base_url))
        assert without_client_retries(model, 7.0).root_client.max_retries == 0
        assert model.root_client.timeout == 7.0
