"""The server under hostile or careless clients (issue 17): oversized bodies, floods of prompts and of
abandoned requests, malformed conversations, blank keys. Each gets a clean answer, leaves nothing in
the queue, and a normal request goes through right after."""
import asyncio
import json
import threading
import time

import httpx
import openai
import pytest

from engine import load_model
from engine.serving.server import create_app
from tests.live_server import serve_in_thread

from .tiny_gguf import TinyShape, write_tiny_llama

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, spm_vocab):
    path = write_tiny_llama(tmp_path_factory.mktemp("hostile") / "tiny.gguf", spm_vocab, "Q8_0",
                            shape=TinyShape(context=1024))
    model = load_model(path, device="cpu", dtype="float32")
    yield model
    model.close()


@pytest.fixture(scope="module")
def base_url(engine):
    with serve_in_thread(create_app(engine, api_key=KEY, model_name="tiny")) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def no_eos(engine):
    return {str(engine.tokenizer.eos_id): -100}


def settled(engine, timeout_s: float = 5.0) -> dict:
    """The engine's stats once nothing runs or waits (or as they are when `timeout_s` runs out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats["running"] == 0 and stats["waiting"] == 0:
            return stats
        time.sleep(0.01)
    return engine.stats()


def assert_serves_normally(client):
    start = time.monotonic()
    reply = client.completions.create(model="tiny", prompt="hi", max_tokens=2, timeout=60)
    assert reply.choices[0].finish_reason and time.monotonic() - start < 60


def test_a_10_mb_body_is_refused_by_its_size_before_it_is_read(base_url, engine, client):
    body = json.dumps({"model": "tiny", "prompt": "fox " * 2_600_000})
    start = time.perf_counter()
    reply = httpx.post(f"{base_url}/v1/completions", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"
    assert time.perf_counter() - start < 3 and settled(engine)["kv_blocks_in_use"] == 0
    assert_serves_normally(client)


def test_a_body_without_a_length_is_cut_off_at_the_limit(engine, client):
    body = json.dumps({"model": "tiny", "prompt": "fox " * 300_000}).encode()  # 1.2 MB against a 1 MB limit
    with serve_in_thread(create_app(engine, max_body_mb=1)) as url:
        def chunks():
            for at in range(0, len(body), 64 << 10):
                yield body[at:at + (64 << 10)]
        try:
            reply = httpx.post(f"{url}/v1/completions", content=chunks(), headers={"Content-Type": "application/json"})
        except httpx.TransportError:  # the server may answer and close while the client still sends
            reply = None
        assert reply is None or reply.status_code == 413
        small = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 1})
        assert small.status_code == 200


def test_a_large_body_is_refused_without_tokenizing_and_the_loop_stays_free(base_url, engine):
    body = json.dumps({"model": "tiny", "prompt": "The quick brown fox. " * 300_000})  # 6.3 MB: under the size limit
    result = {}
    big = threading.Thread(target=lambda: result.update(reply=httpx.post(
        f"{base_url}/v1/completions", content=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=120)))
    start = time.perf_counter()
    big.start()
    latencies = []
    while big.is_alive() or not latencies:
        asked = time.perf_counter()
        assert httpx.get(f"{base_url}/health", timeout=30).status_code == 200
        latencies.append(time.perf_counter() - asked)
    big.join()
    error = result["reply"].json()["error"]
    assert result["reply"].status_code == 400 and error["code"] == "context_length_exceeded" and "characters" in error["message"]
    assert time.perf_counter() - start < 3 and max(latencies) < 0.5, latencies


def test_tokenizing_lets_other_threads_run(engine):
    """The tokenizer releases the GIL, so a long prompt tokenized in the thread pool never stalls the event loop."""
    gaps, done = [], threading.Event()

    def tick():
        while not done.is_set():
            start = time.perf_counter()
            time.sleep(0.001)
            gaps.append(time.perf_counter() - start)

    ticker = threading.Thread(target=tick)
    ticker.start()
    start = time.perf_counter()
    ids = engine.tokenizer.encode("The quick brown fox. " * 50_000)
    took = time.perf_counter() - start
    done.set()
    ticker.join()
    assert len(ids) > 100_000 and max(gaps) < max(0.1, took / 4), (took, max(gaps))


def test_100000_prompts_are_refused_without_a_trace(base_url, engine, client):
    start = time.perf_counter()
    reply = httpx.post(f"{base_url}/v1/completions", headers=AUTH, timeout=60,
                       json={"model": "tiny", "prompt": ["hi"] * 100_000, "max_tokens": 1})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "prompt"
    assert "queues at most 1,024" in reply.json()["error"]["message"] and time.perf_counter() - start < 10
    assert engine.stats()["waiting"] == 0 and engine.stats()["running"] == 0  # at once: nothing was queued
    assert_serves_normally(client)


def test_prompts_the_queue_has_no_room_for_now_get_429_and_no_trace(base_url, engine, client):
    real_stats = engine.stats
    engine.stats = lambda: {**real_stats(), "waiting": engine.loop.max_waiting - 2}  # two places left
    try:
        reply = httpx.post(f"{base_url}/v1/completions", headers=AUTH,
                           json={"model": "tiny", "prompt": ["a", "b", "c"], "max_tokens": 1})
    finally:
        del engine.stats
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "1"
    assert engine.stats()["waiting"] == 0 and engine.stats()["running"] == 0
    assert_serves_normally(client)


def test_a_client_that_gives_up_on_a_non_streaming_request_cancels_it(base_url, engine, no_eos):
    body = {"model": "tiny", "prompt": "The quick brown fox", "max_tokens": 900, "logit_bias": no_eos}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}/v1/completions", json=body, headers=AUTH, timeout=httpx.Timeout(10, read=0.5))
    stats = settled(engine, timeout_s=2.0)
    assert stats["running"] == 0 and stats["kv_blocks_in_use"] == 0


def test_a_flood_of_abandoned_requests_clears_and_a_normal_request_follows(base_url, engine, client, no_eos):
    async def abandon(http, i):
        body = {"model": "tiny", "prompt": f"Request {i}: the quick brown fox", "max_tokens": 900, "logit_bias": no_eos,
                "stream": i % 4 == 0}
        try:
            reply = await http.post(f"{base_url}/v1/completions", json=body, headers=AUTH)
            return reply.status_code
        except httpx.TimeoutException:
            return "gone"

    async def flood():
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=1.0), limits=limits) as http:
            return await asyncio.gather(*(abandon(http, i) for i in range(200)))

    outcomes = asyncio.run(flood())
    assert outcomes.count("gone") >= 150  # they gave up (a few streams may have been answered in time)
    start = time.monotonic()
    stats = settled(engine, timeout_s=30)
    assert stats["running"] == 0 and stats["waiting"] == 0 and stats["kv_blocks_in_use"] == 0
    assert time.monotonic() - start < 30
    assert_serves_normally(client)


CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\": 1}"}}


@pytest.mark.parametrize("messages,param", [
    ([{"role": "system", "content": "Be brief."}], "messages"),
    ([{"role": "assistant", "content": "Hello"}], "messages"),
    ([{"role": "user", "content": None}], "messages.0.content"),
    ([{"role": "user"}], "messages.0.content"),
    ([{"role": "system", "content": None}, {"role": "user", "content": "hi"}], "messages.0.content"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}], "messages.1.content"),
    ([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_1", "content": "2"}], "messages.1.role"),
    ([{"role": "tool", "tool_call_id": "call_1", "content": "2"}, {"role": "user", "content": "hi"}], "messages.0.role"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "content": "2"}], "messages.2.tool_call_id"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": "call_9", "content": "2"}], "messages.2.tool_call_id"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "user", "content": "and?"}, {"role": "tool", "tool_call_id": "call_1", "content": "2"}],
     "messages.3.role"),
])
def test_conversations_openai_refuses_are_refused_naming_the_field(base_url, messages, param):
    reply = httpx.post(f"{base_url}/v1/chat/completions", headers=AUTH,
                       json={"model": "tiny", "messages": messages, "max_tokens": 1})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param and reply.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
     {"role": "tool", "tool_call_id": "call_1", "content": "2"}],
    [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
     {"role": "tool", "tool_call_id": "call_2", "content": "2"}, {"role": "tool", "tool_call_id": "call_1", "content": "3"},
     {"role": "assistant", "content": "It is"}],
    [{"role": "developer", "content": "x"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
])
def test_conversations_openai_accepts_are_answered(base_url, messages):
    reply = httpx.post(f"{base_url}/v1/chat/completions", headers=AUTH,
                       json={"model": "tiny", "messages": messages, "max_tokens": 1})
    assert reply.status_code == 200, reply.text


def test_a_blank_api_key_is_refused_and_an_empty_token_never_passes(engine, base_url):
    for blank in ("", "   "):
        with pytest.raises(ValueError, match="empty"):
            create_app(engine, api_key=blank)
    for header in ("Bearer", "bearer", "", f"Basic {KEY}", f"Bearer {KEY}x", f"{KEY}"):
        reply = httpx.get(f"{base_url}/v1/models", headers={"Authorization": header})
        assert reply.status_code == 401, header
    assert httpx.get(f"{base_url}/v1/models", headers=AUTH).status_code == 200
