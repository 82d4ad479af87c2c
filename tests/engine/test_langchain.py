"""EngineChatModel: invoke, stream, batch and stop sequences on a tiny model (and the default one when slow).

Greedy decoding is deterministic, so the streamed chunks must join to exactly the invoked text.
"""
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage

from engine import load_model
from engine.serving.langchain import EngineChatModel

from .tiny_gguf import TinyShape, write_tiny_llama

QUESTION = [HumanMessage("Tom has 3 apples and buys 4 more. How many apples does he have?")]


class Tokens(BaseCallbackHandler):
    """Collects streamed tokens per LLM run."""

    def __init__(self):
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


class StopAfter(BaseCallbackHandler):
    """Raises on the n-th token, as the Chat page's Stop does."""

    raise_error = True

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.seen += 1
        if self.seen >= self.n:
            raise RuntimeError("stopped by the test")


@pytest.fixture(scope="module")
def engine(tmp_path_factory, spm_vocab):
    path = write_tiny_llama(tmp_path_factory.mktemp("lc") / "tiny.gguf", spm_vocab, "Q8_0",
                            shape=TinyShape(context=1024))
    # plain float32: a prompt decodes to the same tokens alone or in a batch, so results can be compared
    engine = load_model(path, device="cpu", dtype="float32", llama_cpp_numerics=False, kv_cache_mb=64)
    yield engine
    engine.close()


@pytest.fixture
def submitted(engine, monkeypatch):
    """The handles of every engine.submit call."""
    handles = []
    submit = engine.submit

    def spy(prompt, params=None):
        handles.append(submit(prompt, params))
        return handles[-1]

    monkeypatch.setattr(engine, "submit", spy)
    return handles


def model(engine, **fields) -> EngineChatModel:
    return EngineChatModel(engine=engine, **{"max_tokens": 24, **fields})


def test_invoke_reports_usage_and_finish_reason(engine):
    reply = model(engine).invoke(QUESTION)
    assert isinstance(reply, AIMessage) and reply.content
    usage = reply.usage_metadata
    assert usage["input_tokens"] > 10 and 0 < usage["output_tokens"] <= 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert reply.response_metadata["finish_reason"] in ("stop", "length")
    assert reply.response_metadata["cumulative_logprob"] < 0


def test_stream_chunks_join_to_the_invoked_text(engine, submitted):
    chat = model(engine)
    chunks = list(chat.stream(QUESTION))
    assert len([c for c in chunks if c.content]) > 1  # really streamed, not one block
    joined = sum(chunks[1:], chunks[0])
    invoked = chat.invoke(QUESTION)
    assert joined.content == invoked.content
    assert joined.usage_metadata == invoked.usage_metadata
    assert joined.response_metadata["finish_reason"] == invoked.response_metadata["finish_reason"]
    assert len(submitted) == 1  # the plain invoke took engine.generate, not the streamed path


def test_a_token_callback_makes_invoke_stream(engine, submitted):
    tokens = Tokens()
    reply = model(engine).invoke(QUESTION, config={"callbacks": [tokens]})
    assert len(submitted) == 1 and len(tokens.tokens) > 1
    assert "".join(tokens.tokens) == reply.content == model(engine).invoke(QUESTION).content
    assert reply.usage_metadata["output_tokens"] == len(submitted[0].result()[0].token_ids)


def test_streaming_field_streams_every_call(engine, submitted):
    assert model(engine, streaming=True).invoke(QUESTION).content == model(engine).invoke(QUESTION).content
    assert len(submitted) == 1


def test_stop_sequences_cut_the_text_in_every_path(engine):
    full = model(engine).invoke(QUESTION).content
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), full
    expected = full[:full.index(stop)]
    assert model(engine).invoke(QUESTION, stop=[stop]).content == expected
    assert "".join(c.content for c in model(engine).stream(QUESTION, stop=[stop])) == expected
    reply = model(engine).invoke(QUESTION, stop=[stop], config={"callbacks": [Tokens()]})
    assert reply.content == expected and reply.response_metadata["finish_reason"] == "stop"


def test_batch_is_one_engine_call(engine, monkeypatch):
    calls = []
    generate = engine.generate
    monkeypatch.setattr(engine, "generate", lambda prompts, params: calls.append(prompts) or generate(prompts, params))
    other = [HumanMessage("What is 2 + 2?")]
    replies = model(engine).batch([QUESTION, other, QUESTION])
    assert len(calls) == 1 and len(calls[0]) == 3
    assert [r.content for r in replies] == [model(engine).invoke(m).content for m in (QUESTION, other, QUESTION)]


def test_batch_with_callbacks_streams_each_input_and_keeps_seeds_apart(engine, submitted):
    tokens = Tokens()
    chat = model(engine, temperature=1.0, seed=7)
    streamed = chat.batch([QUESTION] * 3, config={"callbacks": [tokens]})
    # the three calls run on a thread pool, so they reach the engine in any order; each keeps its own seed
    assert len(submitted) == 3 and sorted(h.params.seed for h in submitted) == [7, 8, 9]
    assert sorted("".join(tokens.tokens)) == sorted("".join(r.content for r in streamed))
    assert [r.content for r in streamed] == [r.content for r in chat.batch([QUESTION] * 3)]


def test_closing_the_stream_cancels_the_request(engine, submitted):
    stream = model(engine, max_tokens=400).stream(QUESTION)
    assert next(stream).content
    stream.close()
    assert submitted[0].cancelled
    assert submitted[0].result(timeout=30)[0].finish_reason == "cancelled"
    assert engine.stats()["running"] == 0


def test_a_raising_callback_cancels_the_request(engine, submitted):
    with pytest.raises(RuntimeError, match="stopped by the test"):
        model(engine, max_tokens=400).invoke(QUESTION, config={"callbacks": [StopAfter(3)]})
    assert submitted[0].cancelled and submitted[0].result(timeout=30)[0].finish_reason == "cancelled"


def test_a_raising_callback_cancels_every_request_of_a_batch(engine, submitted):
    with pytest.raises(RuntimeError, match="stopped by the test"):
        model(engine, max_tokens=400).batch([QUESTION] * 2, config={"callbacks": [StopAfter(3)]})
    assert len(submitted) == 2 and all(h.cancelled for h in submitted)


@pytest.mark.slow
def test_default_model_invoke_stream_batch_and_stop():
    # float32 without llama.cpp rounding: every row computes alike, so a batch must equal single calls
    # (in bf16 a row's rounding depends on the batch shape and near-ties can flip)
    engine = load_model(dtype="float32", llama_cpp_numerics=False)
    try:
        chat = EngineChatModel(engine=engine, max_tokens=48)
        reply = chat.invoke(QUESTION)
        # behaviour, not arithmetic: the tiny model's sum is not what is tested here
        assert len(reply.content.split()) >= 3 and reply.usage_metadata["output_tokens"] > 0
        assert reply.response_metadata["finish_reason"] in ("stop", "length")
        assert "".join(c.content for c in chat.stream(QUESTION)) == reply.content
        assert [r.content for r in chat.batch([QUESTION, QUESTION])] == [reply.content] * 2
        word = reply.content.split()[2]
        cut = chat.invoke(QUESTION, stop=[word])
        assert cut.content == reply.content[:reply.content.index(word)]
        assert cut.response_metadata["finish_reason"] == "stop"
    finally:
        engine.close()
