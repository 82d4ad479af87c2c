import torch

from app.bench.sampling import bench_sampling, sort_based_top_p


def test_sampling_benchmark_reports_every_cell():
    rows = bench_sampling("cpu", vocab_sizes=(64, 128), batch_sizes=(1, 3))
    assert [(r["vocab"], r["batch"]) for r in rows] == [(64, 1), (64, 3), (128, 1), (128, 3)]
    assert all(r["ours_ms"] > 0 and r["sort_top_p_ms"] > 0 and r["speedup"] > 0 for r in rows)


def test_sort_based_reference_only_draws_from_the_nucleus():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]] * 200)
    drawn = sort_based_top_p(logits, 1.0, 0.5, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0}


def test_arithmetic_questions_are_fixed_and_correct():
    from app.bench.questions import arithmetic_questions

    questions = arithmetic_questions(5)
    assert questions == arithmetic_questions(5) and len({q for q, _ in questions}) == 5
    text, answer = questions[0]
    numbers = [int(w) for w in text.replace(".", " ").split() if w.isdigit()]
    assert int(answer) == numbers[0] + numbers[1] * numbers[2]
