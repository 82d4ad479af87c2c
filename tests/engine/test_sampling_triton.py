"""The Triton sampler against the exact filtered distribution; on CPU through Triton's interpreter."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before the kernels are defined
triton = pytest.importorskip("triton")

from engine.sampling import SamplerState, SamplingParams, apply_bias_and_penalties, sample  # noqa: E402

from .sampling_checks import LOGITS, PARAM_CASES, SIGNIFICANCE, chi_square_p_value, exact_distribution  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def kernel_draws(params: list[SamplingParams], n_draws: int, seed: int = 0) -> torch.Tensor:
    """counts (rows, V): n_draws tokens per row from one filter launch and one draw launch."""
    from engine.kernels.sampling import launch_sample
    from engine.sampling import RowParams

    rows = RowParams.of(params, DEVICE)
    logits = torch.tensor([LOGITS] * len(params), device=DEVICE)
    seeds = torch.arange(seed, seed + len(params), device=DEVICE)
    tokens = launch_sample(logits, rows.temperature, rows.top_k, rows.top_p, rows.min_p, rows.typical_p, seeds, n_draws)
    counts = torch.zeros(len(params), len(LOGITS), dtype=torch.float64)
    return counts.scatter_add_(1, tokens.cpu(), torch.ones_like(tokens.cpu(), dtype=torch.float64))


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_triton_draws_follow_the_exact_distribution(case):
    counts = kernel_draws([SamplingParams(**PARAM_CASES[case])], 8192)[0]
    assert chi_square_p_value(counts, exact_distribution(LOGITS, **PARAM_CASES[case])) > SIGNIFICANCE


def test_triton_mixed_batch_rows_follow_their_own_distributions():
    cases = ["top_k", "top_p", "typical", "min_p", "temperature", "all"]
    counts = kernel_draws([SamplingParams(**PARAM_CASES[c]) for c in cases], 8192, seed=3)
    for row, case in enumerate(cases):
        assert chi_square_p_value(counts[row], exact_distribution(LOGITS, **PARAM_CASES[case])) > SIGNIFICANCE, case


def test_triton_filters_keep_exactly_the_definitional_survivors():
    from engine.kernels.sampling import filter_kernel
    from engine.sampling import RowParams

    cases = sorted(PARAM_CASES)
    rows = RowParams.of([SamplingParams(**PARAM_CASES[c]) for c in cases], DEVICE)
    logits = torch.tensor([LOGITS] * len(cases), device=DEVICE)
    bounds = torch.empty(len(cases), 4, device=DEVICE)
    filter_kernel[(len(cases),)](logits, logits.stride(0), len(LOGITS), bounds, rows.top_k, rows.top_p, rows.min_p,
                                 rows.typical_p, BLOCK=16)
    x = logits.cpu()
    lo_ex, lo_in, hi_ex = (bounds.cpu()[:, i:i + 1] for i in range(3))
    alive = (x > lo_ex) & (x >= lo_in) & (x < hi_ex)
    for row, case in enumerate(cases):
        expected = {t for t, p in enumerate(exact_distribution(LOGITS, **PARAM_CASES[case])) if p > 0}
        assert set(torch.nonzero(alive[row]).flatten().tolist()) == expected, case


def test_triton_greedy_and_seeds():
    logits = torch.tensor([LOGITS, LOGITS], device=DEVICE)
    greedy = [SamplerState.start(SamplingParams(), [], 0), SamplerState.start(SamplingParams(), [], 1)]
    assert sample(logits, greedy, use_triton=True).tolist() == [0, 0]
    draw = lambda seed: [int(sample(logits[:1], [s], use_triton=True)) for s in  # noqa: E731
                         [SamplerState.start(SamplingParams(temperature=2.0), [], seed)] * 12]
    assert draw(5) == draw(5) and draw(5) != draw(6)


def test_triton_penalties_equal_the_torch_reference():
    params = SamplingParams(repetition_penalty=1.7, repeat_last_n=4, frequency_penalty=0.4, presence_penalty=0.3,
                            logit_bias={2: 3.0, 9: -2.0}, temperature=0)
    state = SamplerState.start(params, prompt=[5, 6, 1], seed=0)
    for token in (1, 3, 3):
        state.accept(token)
    from engine.kernels.sampling import launch_adjust
    from engine.sampling import _adjustment_tables

    logits = torch.tensor([LOGITS], device=DEVICE)
    adjusted = logits.clone()
    one = lambda v: torch.tensor([v], dtype=torch.float32, device=DEVICE)  # noqa: E731
    launch_adjust(adjusted, *_adjustment_tables([state], DEVICE), one(1.7), one(0.4), one(0.3))
    torch.testing.assert_close(adjusted.cpu(), apply_bias_and_penalties(logits.cpu(), [state]))


@pytest.mark.gpu
def test_generation_on_cuda_samples_with_the_triton_kernels(tiny_gguf_factory):
    from engine import load_model

    model = load_model(tiny_gguf_factory("Q4_K"), device="cuda")
    params = SamplingParams(temperature=0.9, top_p=0.9, top_k=20, seed=3, max_tokens=12, n=2)
    first, again = model.generate(["The quick"], params), model.generate(["The quick"], params)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    greedy_cpu = load_model(tiny_gguf_factory("Q4_K"), device="cpu", dtype="float32").generate(["The quick"], max_tokens=12)
    greedy_gpu = model.generate(["The quick"], SamplingParams(max_tokens=12))
    assert greedy_gpu[0].token_ids[:4] == greedy_cpu[0].token_ids[:4]
