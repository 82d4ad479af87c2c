"""The PyTorch sampler: each filter against its definition, draws against the exact distribution."""
import pytest
import torch

from engine import SamplingParams, load_model, sampling
from engine.kernels import cpu_matmul
from engine.sampling import (
    RowParams,
    SamplerState,
    apply_bias_and_penalties,
    min_p_filter,
    sample,
    sampling_distribution,
    top_k_filter,
    top_p_filter,
    typical_filter,
)

from .sampling_checks import LOGITS, PARAM_CASES, SIGNIFICANCE, chi_square_p_value, exact_distribution


def rows_of(*params):
    return RowParams.of(list(params), "cpu")


def survivors(filtered: torch.Tensor) -> set[int]:
    return set(torch.nonzero(filtered > float("-inf")).flatten().tolist())


@pytest.mark.parametrize("k", [1, 3, 5, 10, 0])
def test_top_k_keeps_exactly_the_k_largest(k):
    logits = torch.tensor([LOGITS])
    expected = set(range(10)) if k == 0 else set(sorted(range(10), key=lambda t: -LOGITS[t])[:k])
    assert survivors(top_k_filter(logits, torch.tensor([k]))[0]) == expected


def test_filters_match_their_definitions():
    logits = torch.tensor([LOGITS])
    for name, kwargs, fn in [("top_p", dict(top_p=0.6), top_p_filter),
                             ("min_p", dict(min_p=0.3), min_p_filter),
                             ("typical", dict(typical_p=0.5), typical_filter)]:
        expected = {t for t, p in enumerate(exact_distribution(LOGITS, **kwargs)) if p > 0}
        got = survivors(fn(logits, torch.tensor([list(kwargs.values())[0]]))[0])
        assert got == expected, name


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_sampling_distribution_is_the_exact_filtered_distribution(case):
    params = SamplingParams(**PARAM_CASES[case])
    ours = sampling_distribution(torch.tensor([LOGITS]), rows_of(params))[0]
    torch.testing.assert_close(ours.double(), torch.tensor(exact_distribution(LOGITS, **PARAM_CASES[case]), dtype=torch.float64),
                               atol=1e-6, rtol=1e-5)


def draw_counts(params_per_row: list[SamplingParams], draws_per_row: int, seed: int = 0) -> torch.Tensor:
    """counts (rows, V) of tokens drawn by `sample` for the fixed LOGITS."""
    counts = torch.zeros(len(params_per_row), len(LOGITS), dtype=torch.float64)
    batch = params_per_row * 200  # 200 copies of each row per call
    states = [SamplerState.start(p, [], seed * 100_000 + i) for i, p in enumerate(batch)]
    logits = torch.tensor([LOGITS] * len(batch))
    for _ in range(draws_per_row // 200):
        tokens = sample(logits, states)
        for i, token in enumerate(tokens.tolist()):
            counts[i % len(params_per_row), token] += 1
    return counts


@pytest.fixture(params=["native", "reference"])
def sampler(request, monkeypatch):
    """Each draw test runs on the native sampler (kernels/cpu_sampling.c, where it is built) and on the
    PyTorch reference (sampling_distribution, then draw)."""
    if request.param == "native" and not cpu_matmul.available():
        pytest.skip("the native kernels need AVX-512 VNNI and a C compiler")
    if request.param == "reference":
        monkeypatch.setattr(sampling, "_native", lambda logits, rows: False)
    return request.param


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_draws_follow_the_exact_distribution(case, sampler):
    counts = draw_counts([SamplingParams(**PARAM_CASES[case])], 20_000)[0]
    assert chi_square_p_value(counts, exact_distribution(LOGITS, **PARAM_CASES[case])) > SIGNIFICANCE


@pytest.mark.skipif(not cpu_matmul.available(), reason="needs AVX-512 VNNI and a C compiler")
def test_the_native_sampler_draws_the_references_token_for_the_same_uniform():
    """Large vocabularies, flat to peaked rows, every filter but typical-p: for the same uniform the native
    sampler picks the token the reference picks (the exact filtered distribution's inverse CDF), except
    where float rounding moves a boundary (a few in 10,000), and never a token the reference excludes."""
    generator = torch.Generator().manual_seed(11)
    cases = [dict(temperature=0.7, top_p=0.9), dict(temperature=1.0, top_k=40), dict(temperature=0.8, min_p=0.05),
             dict(temperature=1.3, top_k=200, top_p=0.95, min_p=0.01), dict(temperature=0.5),
             dict(temperature=1.0, top_p=0.3), dict(temperature=2.0, top_k=3000, top_p=0.999)]
    same = total = 0
    for case in cases:
        for spread in (0.5, 3.0, 10.0):
            logits = torch.randn(16, 20_000, generator=generator) * spread
            logits[:, :50] = float("-inf")  # masked tokens (a grammar's) are never drawn
            rows = RowParams.of([SamplingParams(**case)] * 16, "cpu")
            probs = sampling_distribution(logits, rows).double()
            cumulative = probs.cumsum(-1)
            for _ in range(10):
                u = torch.rand(16, dtype=torch.float64, generator=generator)
                expected = torch.searchsorted(cumulative, (u * cumulative[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
                ours = cpu_matmul.sample_rows(logits, rows.temperature, rows.top_k, rows.top_p, rows.min_p, u)
                assert bool((probs.gather(1, ours.unsqueeze(1)) > 0).all()), (case, spread)
                same += int((ours == expected).sum())
                total += len(u)
    assert same >= 0.999 * total


def test_mixed_batch_rows_follow_their_own_distributions(sampler):
    cases = ["top_k", "top_p", "min_p", "temperature"]
    counts = draw_counts([SamplingParams(**PARAM_CASES[c]) for c in cases], 10_000, seed=1)
    for row, case in enumerate(cases):
        assert chi_square_p_value(counts[row], exact_distribution(LOGITS, **PARAM_CASES[case])) > SIGNIFICANCE, case


def test_greedy_rows_in_a_mixed_batch_take_the_argmax():
    states = [SamplerState.start(SamplingParams(temperature=0), [], 0), SamplerState.start(SamplingParams(temperature=5), [], 0)]
    logits = torch.tensor([LOGITS, LOGITS])
    picks = {int(sample(logits, states)[0]) for _ in range(20)}
    assert picks == {0}


def test_penalties_and_bias_change_exactly_the_logits_they_should():
    params = SamplingParams(repetition_penalty=2.0, repeat_last_n=3, frequency_penalty=0.5, presence_penalty=0.25,
                            logit_bias={9: -10.0, 8: 4.0})
    state = SamplerState.start(params, prompt=[0, 7, 1], seed=0)
    for token in (1, 1, 4):  # output: token 1 twice, 4 once; the window is the last 3: [1, 1, 4]
        state.accept(token)
    out = apply_bias_and_penalties(torch.tensor([LOGITS]), [state])[0].tolist()
    expected = list(LOGITS)
    expected[9] += -10.0
    expected[8] += 4.0
    expected[1] = expected[1] / 2.0 - (2 * 0.5 + 0.25)  # positive logit: divided; seen twice in the output
    expected[4] = expected[4] / 2.0 - (1 * 0.5 + 0.25)
    assert out == pytest.approx(expected)
    assert out[0] == LOGITS[0] and out[7] == LOGITS[7]  # outside the window / only in the prompt


def test_repetition_penalty_multiplies_negative_logits():
    state = SamplerState.start(SamplingParams(repetition_penalty=1.5), prompt=[6], seed=0)
    assert apply_bias_and_penalties(torch.tensor([LOGITS]), [state])[0, 6] == pytest.approx(-0.75)


@pytest.mark.parametrize("field, value", [("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("min_p", 2.0),
                                          ("top_k", -1), ("typical_p", 0), ("repetition_penalty", 0), ("n", 0),
                                          ("max_tokens", 0), ("logprobs", 50), ("num_beams", 0), ("frequency_penalty", 3)])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value}).validate(100)


def test_unknown_token_ids_are_refused():
    with pytest.raises(ValueError, match="logit_bias.*token id 100"):
        SamplingParams(logit_bias={100: 1.0}).validate(100)
    with pytest.raises(ValueError, match="stop_token_ids"):
        SamplingParams(stop_token_ids=[-1]).validate(100)


# Through generate, on a tiny real model.

@pytest.fixture(scope="module")
def tiny(tiny_gguf_factory):
    return load_model(tiny_gguf_factory("Q8_0"))


def test_seeds_reproduce_and_different_seeds_differ(tiny):
    params = lambda seed: SamplingParams(temperature=1.5, seed=seed, max_tokens=16)  # noqa: E731
    first, again = tiny.generate(["The quick"], params(7))[0], tiny.generate(["The quick"], params(7))[0]
    other = [tiny.generate(["The quick"], params(s))[0].token_ids for s in (8, 9, 10)]
    assert first.token_ids == again.token_ids
    assert any(o != first.token_ids for o in other)


def test_n_samples_and_logprobs_through_generate(tiny):
    out = tiny.generate(["The quick", "Paris"], SamplingParams(temperature=1.0, n=3, seed=1, max_tokens=6, logprobs=2))
    assert [(c.prompt_index, c.index) for c in out] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert len({tuple(c.token_ids) for c in out[:3]}) > 1
    for c in out:
        assert len(c.logprobs) == len(c.token_ids)
        for entry, token in zip(c.logprobs, c.token_ids):
            assert entry["token"] == token and len(entry["top"]) == 2 and entry["logprob"] <= 0
            assert max(entry["top"].values()) >= entry["logprob"] - 1e-5
        assert c.cumulative_logprob == pytest.approx(sum(e["logprob"] for e in c.logprobs), abs=1e-4)


def test_greedy_is_deterministic_and_stop_token_ids_end_generation(tiny):
    a, b = tiny.generate(["The quick"], max_tokens=8)[0], tiny.generate(["The quick"], max_tokens=8)[0]
    assert a.token_ids == b.token_ids and a.logprobs is None
    cut = tiny.generate(["The quick"], SamplingParams(max_tokens=8, stop_token_ids=[a.token_ids[3]]))[0]
    assert cut.finish_reason == "stop" and cut.token_ids == a.token_ids[:a.token_ids.index(a.token_ids[3])]


def test_sort_free_top_p_keeps_the_sort_based_nucleus_on_peaked_and_flat_rows():
    """The partial selection (peaked rows) and the logit histogram (flat rows) against the sort rule."""
    generator = torch.Generator().manual_seed(5)
    logits = torch.cat([torch.randn(8, 5000, generator=generator) * 8,  # peaked: nucleus inside the top 64
                        torch.randn(8, 5000, generator=generator) * 1.5])  # flat: thousands of tokens
    for top_p in (0.3, 0.9, 0.99):
        p = torch.full((16,), top_p)
        probs = torch.softmax(logits, -1)
        order = probs.argsort(dim=-1, descending=True, stable=True)
        ordered = probs.gather(-1, order)
        keep_sorted = (ordered.cumsum(-1) - ordered) < top_p
        keep_sorted[:, 0] = True
        expected = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        assert torch.equal(top_p_filter(logits, p) > float("-inf"), expected), top_p


@pytest.mark.skipif(not cpu_matmul.available(), reason="needs AVX-512 VNNI and a C compiler")
def test_the_native_mask_leaves_exactly_the_references_tokens(monkeypatch):
    """A grammar's packed bitmask applied by kernels/cpu_sampling.c and by the PyTorch path: the same -inf,
    including a vocabulary that ends inside a 32-token word and rows that allow everything."""
    from engine.sampling import mask_disallowed

    generator = torch.Generator().manual_seed(3)
    vocab = 1000 + 7
    logits = torch.randn(6, vocab, generator=generator)
    bitmask = torch.randint(-2**31, 2**31 - 1, (6, (vocab + 31) // 32), dtype=torch.int32, generator=generator)
    bitmask[2] = -1  # a free row in a mixed batch
    bitmask[4, :10] = 0  # a run of disallowed words
    ours = logits.clone()
    mask_disallowed(ours, bitmask)
    monkeypatch.setattr(cpu_matmul, "available", lambda: False)
    reference = logits.clone()
    mask_disallowed(reference, bitmask)
    assert torch.equal(ours, reference) and bool(torch.isinf(ours[0]).any()) and not torch.isinf(ours[2]).any()
