"""`--backend openai` reaches any OpenAI-compatible server: --base-url / --api-key and $REASON_BASE_URL / $REASON_API_KEY."""
import json

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.settings import Settings
from app.store import Store

from .fake_openai import MODEL, fake_openai_server


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in ("REASON_BASE_URL", "REASON_API_KEY", "REASON_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REASON_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_questions(path, answers):
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {a - 1} + 1?", "answer": str(a)}) + "\n"
                            for i, a in enumerate(answers)))
    return path


def test_batch_runs_against_any_openai_compatible_server(home, tmp_path):
    source, out = write_questions(tmp_path / "in.jsonl", [5, 6, 5]), tmp_path / "out.jsonl"
    with fake_openai_server(api_key="K") as server:
        result = CliRunner().invoke(cli, ["batch", str(source), "--strategy", "direct", "--strategy", "cot",
                                          "--out", str(out), "--backend", "openai", "--base-url", server.base_url,
                                          "--api-key", "K", "--max-tokens", "16", "--top-k", "3"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["strategy"], r["id"]) for r in records) == sorted((s, f"q{i}") for s in ("direct", "cot") for i in range(3))
    assert {r["id"]: r["correct"] for r in records if r["strategy"] == "cot"} == {"q0": True, "q1": False, "q2": True}
    assert {r["status"] for r in records} == {"ok"}
    assert server.requests and {r["authorization"] for r in server.requests} == {"Bearer K"}
    chats = [r["body"] for r in server.requests if r["path"] == "/v1/chat/completions"]
    tokens = [b.get("max_completion_tokens", b.get("max_tokens")) for b in chats]  # the OpenAI API renamed it
    assert len(chats) == 6 and tokens == [16] * 6 and all(b["model"] == MODEL and b["top_k"] == 3 for b in chats)
    store = Store.open(Settings.from_env())
    batch = store.list_batches()[0]
    assert batch["status"] == "finished" and batch["done"] == 6 and batch["settings"]["base_url"] == server.base_url
    runs = store.search_runs(batch_id=batch["id"], limit=None)
    assert len(runs) == 6 and {(r["backend"], r["model_id"], r["status"]) for r in runs} == {("openai", MODEL, "ok")}
    assert {r["id"] for r in runs} == {r["run_id"] for r in records}
    assert all(store.get_run(r["id"])["steps"][0]["completion_tokens"] == 4 for r in runs)


def test_ask_takes_the_server_and_key_from_the_environment(home, monkeypatch):
    with fake_openai_server(api_key="secret") as server:
        monkeypatch.setenv("REASON_BASE_URL", server.base_url)
        monkeypatch.setenv("REASON_API_KEY", "secret")
        result = CliRunner().invoke(cli, ["ask", "What is 4 + 1?", "--strategy", "cot", "--backend", "openai", "--json"])
    assert result.exit_code == 0, result.output
    trace = json.loads(result.output)
    assert (trace["answer"], trace["backend"], trace["model_id"]) == ("5", "openai", MODEL)
    assert {r["authorization"] for r in server.requests} == {"Bearer secret"}


def test_a_wrong_key_is_one_clear_message(home):
    with fake_openai_server(api_key="right") as server:
        result = CliRunner().invoke(cli, ["ask", "2+2?", "--backend", "openai", "--base-url", server.base_url,
                                          "--api-key", "wrong"])
    assert result.exit_code == 1 and "cannot list the models" in result.output and "Traceback" not in result.output


def test_a_server_refusing_a_call_mid_run_is_stored_as_an_error_run(home):
    with fake_openai_server() as server:
        server.chat_status = 400
        result = CliRunner().invoke(cli, ["ask", "2+2?", "--backend", "openai", "--base-url", server.base_url,
                                          "--model", MODEL, "--json"])
    assert result.exit_code == 1, result.output
    trace = json.loads(result.output)
    assert trace["status"] == "error" and "Error code: 400" in trace["error"]
    assert Store.open(Settings.from_env()).get_run(trace["run_id"])["status"] == "error"


def test_the_model_page_shows_any_server_with_its_key():
    from app.ui.model_page import server_status

    with fake_openai_server(api_key="K") as server:
        shown = server_status(server.base_url, "K")
        refused = server_status(server.base_url, "wrong")
    assert shown == f"OpenAI-compatible server: **{server.base_url}** serving `{MODEL}`"  # no /health: no queue line
    assert "answers HTTP 401" in refused
    assert "not running" in server_status(server.base_url, "K")  # stopped now


def test_ui_takes_base_url_and_api_key(home, monkeypatch):
    seen = {}
    monkeypatch.setattr("app.ui.launch", lambda settings, **kwargs: seen.update(settings=settings))
    result = CliRunner().invoke(cli, ["ui", "--base-url", "http://gpu-box:8000/v1", "--api-key", "K"])
    assert result.exit_code == 0, result.output
    assert (seen["settings"].base_url, seen["settings"].api_key) == ("http://gpu-box:8000/v1", "K")
    monkeypatch.setenv("REASON_BASE_URL", "http://other:9000/v1")
    CliRunner().invoke(cli, ["ui"])
    assert seen["settings"].base_url == "http://other:9000/v1" and seen["settings"].api_key is None
    assert "K" not in repr(seen["settings"])  # keys stay out of logs and reprs


def test_serve_still_requires_the_key_from_the_environment(home, monkeypatch):
    seen = {}
    monkeypatch.setenv("REASON_API_KEY", "from-env")
    monkeypatch.setattr("app.cli._load", lambda *args: type("E", (), {"info": {"name": "m"}, "close": lambda self: None})())
    monkeypatch.setattr("engine.serving.server.serve",
                        lambda engine, host, port, api_key, warn, **options: seen.update(key=api_key))
    assert CliRunner().invoke(cli, ["serve"]).exit_code == 0 and seen["key"] == "from-env"
    assert CliRunner().invoke(cli, ["serve", "--api-key", "flag"]).exit_code == 0 and seen["key"] == "flag"
