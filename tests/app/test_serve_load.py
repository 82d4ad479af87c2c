"""`reason serve` from the app's side: the openai backend against it, and 16 streaming clients for 30 s.

Under load every request must end as a complete stream (one chunk per generated token, one finish per
choice, usage, [DONE]) or as a clean 429; none lost or duplicated; the KV pool drains back to where it began.
"""
import asyncio
import json
import random
import time

import httpx
import pytest

from app.backends import BackendChoice, chat_model
from engine import load_model
from engine.serving.server import create_app
from tests.live_server import serve_in_thread

CLIENTS = 16
SECONDS = 30
QUESTIONS = ["What is 7 times 8?", "Name three farm animals.", "Why is the sky blue?", "Write a haiku about rain.",
             "What is the capital of France?", "Count from one to five."]


@pytest.fixture(scope="module")
def engine():
    model = load_model()
    yield model
    model.close()


def test_openai_backend_talks_to_our_server(tiny_model):
    engine = load_model(tiny_model, device="cpu")
    try:
        with serve_in_thread(create_app(engine, api_key="k")) as base_url:
            choice = BackendChoice("openai", sampling={"max_tokens": 5, "top_k": 3}, base_url=f"{base_url}/v1",
                                   api_key="k")
            model, info = chat_model(choice)
            reply = model.invoke("hello")
            with pytest.raises(ValueError, match="cannot list the models"):
                chat_model(BackendChoice("openai", base_url=f"{base_url}/v1", api_key="wrong"))
    finally:
        engine.close()
    assert info.backend == "openai" and info.model_id == "tiny" and info.sampling["top_k"] == 3
    assert reply.usage_metadata["output_tokens"] <= 5


def test_the_model_page_shows_a_server_running_beside_the_app(tiny_model):
    from app.ui.model_page import server_status

    engine = load_model(tiny_model, device="cpu")
    try:
        with serve_in_thread(create_app(engine)) as base_url:
            shown = server_status(f"{base_url}/v1")
    finally:
        engine.close()
    assert f"**{base_url}/v1** serving `tiny`" in shown and "KV blocks in use 0" in shown
    assert "not running" in server_status(f"{base_url}/v1")  # stopped now


def _request(rng: random.Random, i: int) -> tuple[str, dict]:
    """Alternate chat and completions; vary length, n, temperature and seed; ask for logprobs to count tokens."""
    common = {"model": "default", "stream": True, "stream_options": {"include_usage": True},
              "max_tokens": rng.randint(4, 40), "n": rng.choice([1, 1, 2]),
              "temperature": rng.choice([0.0, 0.7]), "seed": rng.randint(0, 1000)}
    question = rng.choice(QUESTIONS)
    if i % 2:
        return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": question}],
                                        "logprobs": True, "top_logprobs": 0}
    return "/v1/completions", {**common, "prompt": f"Q: {question}\nA:", "logprobs": 0}


def _check_stream(lines: list[str], body: dict) -> str:
    """The response id of a complete, well-formed stream (asserts on anything else)."""
    assert lines[-1] == "data: [DONE]" and lines.count("data: [DONE]") == 1
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all("error" not in c for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    usage = chunks[-1]["usage"]
    chat = "messages" in body
    token_chunks, finishes = 0, {}
    for choice in (ch for c in chunks[:-1] for ch in c["choices"]):
        lp = choice.get("logprobs")
        token_chunks += len(lp["content"] if chat else lp["tokens"]) if lp else 0
        if choice["finish_reason"]:
            assert choice["index"] not in finishes
            finishes[choice["index"]] = choice["finish_reason"]
    assert sorted(finishes) == list(range(body["n"])) and set(finishes.values()) <= {"stop", "length"}
    assert token_chunks == usage["completion_tokens"] <= body["n"] * body["max_tokens"]
    return chunks[0]["id"]


async def _client(client: httpx.AsyncClient, seed: int, deadline: float, sent: list, outcomes: list) -> None:
    rng = random.Random(seed)
    i = seed
    while time.monotonic() < deadline:
        path, body = _request(rng, i)
        i += 1
        sent.append(path)
        async with client.stream("POST", path, json=body) as reply:
            if reply.status_code == 429:
                assert json.loads(await reply.aread())["error"]["message"]
                outcomes.append(("busy", None))
                await asyncio.sleep(float(reply.headers["Retry-After"]))  # back off as told
                continue
            assert reply.status_code == 200, await reply.aread()
            lines = [line async for line in reply.aiter_lines() if line]
        outcomes.append(("done", _check_stream(lines, body)))


async def _load(base_url: str) -> tuple[list, list]:
    sent: list = []
    outcomes: list = []
    deadline = time.monotonic() + SECONDS
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(_client(client, seed, deadline, sent, outcomes) for seed in range(CLIENTS)))
    return sent, outcomes


@pytest.mark.slow
def test_sixteen_streaming_clients_for_thirty_seconds(engine):
    start = engine.stats()["kv_blocks_in_use"]
    engine.loop.max_waiting = 8  # small enough that a burst can meet a full queue
    with serve_in_thread(create_app(engine, model_name="default")) as base_url:
        sent, outcomes = asyncio.run(_load(base_url))
    done = [rid for kind, rid in outcomes if kind == "done"]
    assert len(outcomes) == len(sent)  # none lost: each request ended complete or busy
    assert len(done) >= CLIENTS and len(set(done)) == len(done)  # none duplicated; each client finished some
    deadline = time.monotonic() + 2
    while engine.stats()["kv_blocks_in_use"] != start and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = engine.stats()
    assert stats["kv_blocks_in_use"] == start and stats["running"] == 0 and stats["waiting"] == 0
