"""Speculative decoding by prompt lookup: drafts, exact greedy output, and the target distribution
kept exactly by the accept/residual rule (chi-square)."""
import pytest
import torch

from engine import SamplingParams, load_model
from engine.sampling import SamplerState
from engine.speculative import propose, verify

from .sampling_checks import SIGNIFICANCE, chi_square_p_value


def test_the_latest_occurrence_of_the_longest_ngram_is_the_draft():
    tokens = [5, 6, 7, 8, 9, 1, 2, 5, 6, 7, 3, 4, 5, 6, 7]
    assert propose(tokens, 2) == [3, 4]  # "5 6 7" last seen before the tail at index 7
    assert propose([1, 2, 3, 9, 2, 3], 3) == [9, 2, 3]
    assert propose([1, 2, 3, 4], 3) == [] and propose(tokens, 0) == []


def test_greedy_verification_accepts_exactly_the_argmax_prefix():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0], [0.0, 0.0, 5.0]])
    state = SamplerState.start(SamplingParams(), [0], seed=0)
    assert verify(logits, [1, 0], state) == [1, 0, 2]  # both accepted, then the bonus token
    assert verify(logits, [1, 2], state) == [1, 0]  # the second is rejected: the argmax replaces it
    assert verify(logits, [2, 0], state) == [1]


LOGITS = torch.tensor([[1.0, 0.5, 0.0, -0.5], [0.2, 1.2, -1.0, 0.3]])


def test_sampling_with_a_draft_keeps_the_target_distribution():
    """The first emitted token follows p0 whatever the draft; after an accepted draft x, the next follows p1."""
    params = SamplingParams(temperature=0.9, top_k=3)
    state = SamplerState.start(params, [0], seed=11)
    first = torch.zeros(4, dtype=torch.float64)
    second = torch.zeros(4, dtype=torch.float64)
    for _ in range(6000):
        out = verify(LOGITS, [1], state)
        first[out[0]] += 1
        if out[0] == 1:
            second[out[1]] += 1
    exact = [torch.softmax(row.masked_fill(row < row.topk(3).values[-1], float("-inf")) / 0.9, -1).tolist()
             for row in LOGITS]
    assert chi_square_p_value(first, exact[0]) > SIGNIFICANCE
    assert chi_square_p_value(second, exact[1]) > SIGNIFICANCE


@pytest.fixture(scope="module")
def engine(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("Q4_0"), device="cpu")
    yield model
    model.close()


REPEATS = "The cat sat on the mat. The dog sat on the log. The cat sat on the mat. The dog sat on the"


@pytest.mark.parametrize("deterministic", [True, False])
def test_greedy_output_is_the_same_with_and_without_drafts(engine, tiny_gguf_factory, deterministic):
    """Bit-identical in batch-invariant mode; in float32 the verification pass equals decoding one by one."""
    model = engine if deterministic else load_model(tiny_gguf_factory("Q4_0"), device="cpu", dtype="float32",
                                                    llama_cpp_numerics=False)
    no_eos = {model.tokenizer.eos_id: -100.0}
    plain = SamplingParams(max_tokens=40, logit_bias=no_eos, deterministic=deterministic)
    drafted = SamplingParams(max_tokens=40, logit_bias=no_eos, deterministic=deterministic, draft_tokens=4)
    before = model.stats()["accepted_tokens"]
    prompts = [REPEATS, "1 2 3 4 5 1 2 3 4 5 1 2 3"]
    assert [c.token_ids for c in model.generate(prompts, drafted)] == \
        [c.token_ids for c in model.generate(prompts, plain)]
    assert model.stats()["accepted_tokens"] > before  # drafts were really accepted, not all rejected


def test_sampled_generation_with_drafts_finishes_normally(engine):
    params = SamplingParams(max_tokens=30, temperature=0.8, seed=3, n=3, draft_tokens=4, logprobs=2)
    for completion in engine.generate([REPEATS], params):
        assert len(completion.token_ids) == len(completion.logprobs) <= 30
        assert completion.finish_reason in ("stop", "length")
    assert engine.stats()["kv_blocks_in_use"] == 0
