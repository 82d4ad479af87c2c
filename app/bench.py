"""Benchmarks that run ours and a reference side by side in one process and report ratios."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from engine.sampling import SamplerState, SamplingParams, sample

VOCAB_SIZES = (32000, 49152, 128256)
BATCH_SIZES = (1, 8, 64, 256)


def sort_based_top_p(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """The usual PyTorch nucleus sampler: sort, softmax, cumsum, mask, scatter back, multinomial."""
    sorted_logits, order = (logits / temperature).sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs > top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    filtered = torch.empty_like(sorted_logits).scatter_(-1, order, sorted_logits)
    return torch.multinomial(filtered.softmax(-1), 1, generator=generator).squeeze(-1)


def _time_per_call(fn: Callable[[], object], device: torch.device, budget_s: float = 0.5) -> float:
    """Median seconds per call after a warm-up, within a rough time budget."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 50):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_sampling(device: str = "cpu", vocab_sizes=VOCAB_SIZES, batch_sizes=BATCH_SIZES, progress=None) -> list[dict]:
    """Per (vocab, batch): ours vs sort-based top-p, temperature 0.8 and top-p 0.9 on random logits."""
    dev = torch.device(device)
    params = SamplingParams(temperature=0.8, top_p=0.9)
    generator = torch.Generator(device=dev).manual_seed(0)
    results = []
    for vocab in vocab_sizes:
        for batch in batch_sizes:
            logits = torch.randn(batch, vocab, device=dev, generator=generator) * 3
            states = [SamplerState.start(params, [], i) for i in range(batch)]
            ours = _time_per_call(lambda: sample(logits, states), dev)
            reference = _time_per_call(lambda: sort_based_top_p(logits, 0.8, 0.9, generator), dev)
            results.append({"vocab": vocab, "batch": batch, "ours_ms": ours * 1e3, "sort_top_p_ms": reference * 1e3,
                            "speedup": reference / ours})
            if progress:
                progress(results[-1])
    return results


def arithmetic_questions(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n short arithmetic word problems with their answers, the same every time."""
    import random

    rng = random.Random(seed)
    items = ["apples", "pencils", "books", "marbles", "stickers", "cookies"]
    questions = []
    for _ in range(n):
        a, b, c = rng.randint(2, 40), rng.randint(2, 9), rng.randint(1, 20)
        thing = rng.choice(items)
        questions.append((f"Sam has {a} {thing}. He buys {b} boxes with {c} {thing} in each box. "
                          f"How many {thing} does he have now?", str(a + b * c)))
    return questions


def bench_batch(backends=("engine", "llamacpp"), n_questions: int = 64, concurrency: int = 4, max_tokens: int = 256,
                model_path: str | None = None, progress=None) -> list[dict]:
    """The CoT strategy on n questions per backend through the same strategy code: wall time and questions/min."""
    from concurrent.futures import ThreadPoolExecutor

    from prompts.scoring import score

    from .backends import BackendChoice, chat_model
    from .runner import run_question

    questions = arithmetic_questions(n_questions)
    results = []
    for backend in backends:
        model, info = chat_model(BackendChoice(backend, model_path, "cpu", None, {"max_tokens": max_tokens}))
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            traces = list(pool.map(lambda q: run_question("cot", q[0], model, info), questions))
        wall = time.perf_counter() - started
        correct = sum(score(t.answer, q[1]).correct for t, q in zip(traces, questions))
        results.append({"backend": backend, "questions": n_questions, "wall_s": wall,
                        "questions_per_min": 60 * n_questions / wall, "correct": correct,
                        "errors": sum(t.status == "error" for t in traces)})
        if progress:
            progress(results[-1])
    return results
