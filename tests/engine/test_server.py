"""The OpenAI-compatible server, driven by the official `openai` client and LangChain's ChatOpenAI over loopback."""
import json
import time

import httpx
import openai
import pytest

from engine import SamplingParams, load_model
from engine.serving.server import create_app, exposure_warning
from tests.live_server import serve_in_thread

from .tiny_gguf import TinyShape, write_tiny_llama

KEY = "test-key"
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def engine(tmp_path_factory, spm_vocab):
    path = write_tiny_llama(tmp_path_factory.mktemp("server") / "tiny.gguf", spm_vocab, "Q8_0",
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
    """logit_bias that keeps the random tiny model from ending early."""
    return {str(engine.tokenizer.eos_id): -100}


def greedy(engine, prompt: str, **params):
    return engine.generate([prompt], SamplingParams(**params))[0]


def test_models_and_health(client, base_url, engine):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    health = httpx.get(f"{base_url}/health").json()
    assert health["model_loaded"] and health["queue_depth"] == 0
    assert health["kv_blocks_in_use"] == engine.stats()["kv_blocks_in_use"]


def test_completion_is_the_engines_greedy_output(client, engine):
    reply = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, temperature=0)
    expected = greedy(engine, PROMPT, max_tokens=8)
    assert reply.choices[0].text == expected.text and reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == len(engine.tokenizer.encode(PROMPT))
    assert reply.usage.completion_tokens == len(expected.token_ids)


def test_chat_renders_the_chat_template(client, engine):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a farm animal."}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    expected = greedy(engine, engine.apply_chat_template(messages), max_tokens=8)
    assert reply.choices[0].message.content == expected.text and reply.choices[0].message.role == "assistant"
    assert reply.usage.prompt_tokens == len(engine.tokenizer.encode(engine.apply_chat_template(messages)))


def test_streams_add_up_to_the_whole_reply(client, no_eos):
    args = dict(model="tiny", max_tokens=12, temperature=0, logit_bias=no_eos)
    whole = client.completions.create(prompt=PROMPT, **args).choices[0].text
    chunks = list(client.completions.create(prompt=PROMPT, stream=True, **args))
    assert "".join(c.choices[0].text for c in chunks) == whole and chunks[-1].choices[0].finish_reason == "length"
    messages = [{"role": "user", "content": PROMPT}]
    whole = client.chat.completions.create(messages=messages, **args).choices[0].message.content
    chunks = list(client.chat.completions.create(messages=messages, stream=True,
                                                 stream_options={"include_usage": True}, **args))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_sse_wire_format(base_url):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["object"] == "text_completion" and first["id"].startswith("cmpl-")


def test_n_samples_and_seed_reproduce(client, no_eos):
    args = dict(model="tiny", prompt=PROMPT, max_tokens=10, temperature=1.0, n=2, logit_bias=no_eos)
    first = client.completions.create(seed=7, **args)
    again = client.completions.create(seed=7, **args)
    other = client.completions.create(seed=8, **args)
    texts = lambda r: [c.text for c in sorted(r.choices, key=lambda c: c.index)]  # noqa: E731
    assert [c.index for c in first.choices] == [0, 1] and first.usage.completion_tokens == 20
    assert texts(first) == texts(again) and texts(first) != texts(other)


def test_stop_string_ends_the_text(client, no_eos):
    args = dict(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0, logit_bias=no_eos)
    full = client.completions.create(**args).choices[0].text
    stop = full[8:11]
    reply = client.completions.create(stop=[stop], **args).choices[0]
    assert reply.text == full[:full.index(stop)] and reply.finish_reason == "stop"


def test_logprobs(client, no_eos):
    reply = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3)
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == reply.usage.completion_tokens > 0
    assert all(len(top) <= 3 and chosen == pytest.approx(max(top.values()), abs=1e-4)
               for chosen, top in zip(lp.token_logprobs, lp.top_logprobs))  # greedy: the best alternative
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                          temperature=0, logprobs=True, top_logprobs=2, logit_bias=no_eos)
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)


def test_langchain_chat_openai(base_url, engine):
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(base_url=f"{base_url}/v1", api_key=KEY, model="tiny", temperature=0, max_tokens=10,
                       max_retries=0)
    expected = greedy(engine, engine.apply_chat_template([{"role": "user", "content": "hello"}]), max_tokens=10).text
    assert model.invoke("hello").content == expected
    assert "".join(chunk.content for chunk in model.stream("hello")) == expected
    replies = model.batch(["hello", "a farmer", "hello"])
    assert replies[0].content == replies[2].content == expected and len(replies) == 3
    stop = expected[4:7]
    assert stop and model.invoke("hello", stop=[stop]).content == expected[:expected.index(stop)]


def test_a_long_stream_does_not_block_a_short_request(base_url, client, no_eos):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 500, "stream": True, "logit_bias": no_eos}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
        short = client.completions.create(model="tiny", prompt="hi", max_tokens=2, logit_bias=no_eos)
        assert short.usage.completion_tokens == 2
        assert next(line for line in lines if line) != "data: [DONE]"  # the long one is still going


def _post(base_url, path, body, key=KEY):
    return httpx.post(f"{base_url}{path}", content=body if isinstance(body, str) else json.dumps(body),
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


BAD_REQUESTS = [
    ("/v1/completions", {"model": "tiny", "prompt": "a", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "n": 0}, 400, "n"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": "lots"}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "frequency_penalty": 3}, 400, "frequency_penalty"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "logit_bias": {"abc": 1}}, 400, "logit_bias"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "logit_bias": {"99999": 1}}, 400, "logit_bias"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 5000}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny", "prompt": "a " * 2000}, 400, "prompt"),
    ("/v1/completions", {"model": "tiny", "prompt": [5, 999999]}, 400, "prompt"),
    ("/v1/completions", {"model": "tiny"}, 400, "prompt"),
    ("/v1/completions", "{not json", 400, None),
    ("/v1/completions", {"model": "gpt-4o", "prompt": "a"}, 400, "model"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "wizard", "content": "a"}]}, 400,
     "messages.0.role"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "a"}], "logprobs": True,
                              "top_logprobs": 50}, 400, "top_logprobs"),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": 5}]}, 400,
     "messages.0.content"),
    ("/v1/completions", {"model": "tiny", "prompt": {}}, 400, "prompt"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "stop": 5}, 400, "stop"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "n": 100000}, 400, "n"),
    ("/v1/completions", '{"model": "tiny", "prompt": "a", "temperature": NaN}', 400, "temperature"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "top_k": -1}, 400, "top_k"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "min_p": 2}, 400, "min_p"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "typical_p": 0}, 400, "typical_p"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "seed": -1}, 400, "seed"),
    ("/v1/completions", {"model": "tiny", "prompt": "a", "echo": True}, 400, "echo"),
]


@pytest.mark.parametrize("path,body,status,param", BAD_REQUESTS)
def test_bad_input_gets_an_openai_error_and_the_server_goes_on(base_url, client, path, body, status, param):
    reply = _post(base_url, path, body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert client.completions.create(model="tiny", prompt="a", max_tokens=1).choices[0].finish_reason


def test_context_overflow_is_named(base_url):
    error = _post(base_url, "/v1/completions", {"model": "tiny", "prompt": "a " * 2000}).json()["error"]
    assert error["code"] == "context_length_exceeded" and "context" in error["message"]


def test_wrong_key_unknown_route_and_full_queue(base_url, engine):
    assert _post(base_url, "/v1/completions", {"model": "tiny", "prompt": "a"}, key="nope").status_code == 401
    assert httpx.get(f"{base_url}/v1/models").json()["error"]["type"] == "authentication_error"
    missing = httpx.get(f"{base_url}/v1/nothing", headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 404 and "error" in missing.json()
    stats = engine.stats
    engine.stats = lambda: {**stats(), "waiting": engine.loop.max_waiting}  # as if the queue were full
    try:
        busy = _post(base_url, "/v1/completions", {"model": "tiny", "prompt": "a"})
    finally:
        del engine.stats
    assert busy.status_code == 429 and int(busy.headers["Retry-After"]) >= 1 and busy.json()["error"]["code"]
    assert _post(base_url, "/v1/completions", {"model": "tiny", "prompt": "a", "max_tokens": 1}).status_code == 200


def test_disconnect_cancels_the_generation(base_url, engine, no_eos):
    start = engine.stats()["kv_blocks_in_use"]
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 900, "stream": True, "logit_bias": no_eos}
    with httpx.stream("POST", f"{base_url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        chunks = (line for line in r.iter_lines() if line.startswith("data: {"))
        for _ in range(3):
            next(chunks)
        assert engine.stats()["kv_blocks_in_use"] > start
    deadline = time.monotonic() + 1.0
    while engine.stats()["kv_blocks_in_use"] != start and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stats()["kv_blocks_in_use"] == start and engine.stats()["running"] == 0


def test_exposure_warning():
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("localhost", None) is None
    assert exposure_warning("::1", None) is None and exposure_warning("0.0.0.0", "key") is None
    assert "--api-key" in exposure_warning("0.0.0.0", None)


def test_the_request_models_take_every_sampling_knob():
    """SamplingParams' knobs are the one list: a new knob that the server does not take fails here."""
    from engine.sampling_params import sampling_knobs
    from engine.serving.openai_schema import ChatRequest, CompletionRequest

    for schema in (ChatRequest, CompletionRequest):
        assert set(sampling_knobs()) <= set(schema.model_fields), schema.__name__


def test_draft_tokens_and_deterministic_pass_through(client, engine):
    prompt = "one two three one two three one two three one two"
    before = engine.stats()["drafted_tokens"]
    reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=24, temperature=0,
                                      extra_body={"draft_tokens": 4, "deterministic": True})
    assert engine.stats()["drafted_tokens"] > before
    assert reply.choices[0].text == greedy(engine, prompt, max_tokens=24, deterministic=True).text  # drafts change nothing
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt=prompt, max_tokens=2, extra_body={"draft_tokens": 99})
    assert caught.value.body["param"] == "draft_tokens"
