"""Batch-invariant mode: a request's greedy tokens are bit-identical alone or in any batch, with any
prefill chunk size, in the default dtype (bf16 with packed weights on this CPU)."""
import pytest

from engine import SamplingParams, load_model

PREFIX = "Question: Tom has 3 apples and buys 4 more. How many apples? Answer: 7. " * 3
TARGETS = [PREFIX + "Question: Sam has 2 pens and finds 5. How many pens? Answer:",
           "The quick brown fox jumps over the lazy dog and then",
           "Paris is the capital of France; Berlin is the capital of"]


@pytest.fixture(scope="module")
def engine(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("Q4_0"), device="cpu")  # the default: bf16, packed weights
    assert model.weights == "packed"
    yield model
    model.close()


def neighbours(count: int) -> list[str]:
    texts = [PREFIX + f"Question: what is {i} plus {i}? Answer:" for i in range(count // 2)]
    return texts + [f"Story number {i}: once upon a time a {'long ' * (i % 9)}road" for i in range(count - len(texts))]


def greedy(**kw):
    return SamplingParams(max_tokens=24, deterministic=True, logprobs=1, logit_bias={1: -100.0, 2: -100.0}, **kw)


def outcome(completion):
    """Tokens and their log-probabilities: bit for bit (without the mode the latter differ in every row)."""
    return completion.token_ids, [entry["logprob"] for entry in completion.logprobs]


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("chunk", [512, 5])
def test_tokens_are_the_same_alone_and_in_any_batch(engine, batch, chunk):
    engine.scheduler.prefill_chunk = 512
    engine.pool.clear_cache()
    alone = [outcome(engine.generate([t], greedy())[0]) for t in TARGETS]
    engine.scheduler.prefill_chunk = chunk
    try:
        prompts = TARGETS + neighbours(batch - 1)
        together = engine.generate(prompts, greedy())
    finally:
        engine.scheduler.prefill_chunk = 512
    assert [outcome(c) for c in together[:len(TARGETS)]] == alone


def test_the_engine_option_makes_every_request_invariant(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("Q4_0"), device="cpu", deterministic=True)
    try:
        plain = SamplingParams(max_tokens=16)
        alone = model.generate([TARGETS[1]], plain)[0].token_ids
        assert model.generate([TARGETS[1]] + neighbours(9), plain)[0].token_ids == alone
    finally:
        model.close()
