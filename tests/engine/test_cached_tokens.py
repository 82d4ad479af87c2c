"""How many prompt tokens came from the prefix cache: Completion.cached_tokens, and LangChain's
usage `input_token_details.cache_read` (what a fork reports as reused)."""
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from engine import load_model
from engine.serving.langchain import EngineChatModel

from .test_scheduler_plans import BS, FakeRunner, run, scheduler, submit
from .tiny_gguf import TinyShape, write_tiny_llama


def test_a_prompt_reports_the_cached_blocks_it_started_from():
    s, runner = scheduler(), FakeRunner()
    shared = [5, 6, 7, 8, 1, 2, 3, 4]  # two full blocks
    first = submit(s, shared + [10], max_tokens=1)
    run(s, runner)
    second = submit(s, shared + [20, 21], max_tokens=1)
    alone = submit(s, [9, 9, 9], max_tokens=1)
    run(s, runner)
    assert first.result(timeout=0)[0].cached_tokens == 0  # nothing was cached yet
    assert second.result(timeout=0)[0].cached_tokens == 2 * BS
    assert alone.result(timeout=0)[0].cached_tokens == 0


def test_a_fully_cached_prompt_still_computes_its_last_block():
    s, runner = scheduler(), FakeRunner()
    prompt = [5, 6, 7, 8, 1, 2, 3, 4]
    submit(s, prompt, max_tokens=1)
    run(s, runner)
    again = submit(s, prompt, max_tokens=1)
    run(s, runner)
    assert again.result(timeout=0)[0].cached_tokens == BS  # the last token's logits need a computed block


@pytest.fixture(scope="module")
def engine(tmp_path_factory, spm_vocab):
    path = write_tiny_llama(tmp_path_factory.mktemp("cache") / "tiny.gguf", spm_vocab, "Q8_0",
                            shape=TinyShape(context=1024))
    engine = load_model(path, device="cpu", dtype="float32", llama_cpp_numerics=False, kv_cache_mb=64)
    yield engine
    engine.close()


def test_langchain_usage_says_how_much_of_the_prompt_was_read_from_the_cache(engine):
    chat = EngineChatModel(engine=engine, max_tokens=4)
    question = [HumanMessage("Tom has 3 apples and buys 4 more. " * 8 + "How many apples does he have?")]
    engine.pool.clear_cache()
    first = chat.invoke(question).usage_metadata
    again = chat.invoke([*question, AIMessage("He has")]).usage_metadata  # the same prompt, continued
    assert first["input_token_details"]["cache_read"] == 0
    cached = again["input_token_details"]["cache_read"]
    assert cached > 0 and cached % engine.pool.block_size == 0 and cached < again["input_tokens"]
    chunks = list(chat.stream(question))
    streamed = sum(chunks[1:], chunks[0]).usage_metadata  # the streamed path reports it too
    assert streamed["input_token_details"]["cache_read"] > 0
