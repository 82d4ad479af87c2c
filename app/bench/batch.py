"""`reason bench batch`: the CoT strategy on the same questions through our engine and llama.cpp."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from prompts.scoring import score
from prompts.template import load_shipped

from ..backends import BackendChoice, chat_model
from ..runner import run_question
from .questions import arithmetic_questions


def bench_batch(backends=("engine", "llamacpp"), n_questions: int = 64, concurrency: int = 4, max_tokens: int = 256,
                model_path: str | None = None, progress=None) -> list[dict]:
    """The CoT strategy on n questions per backend through the same strategy code: wall time and questions/min."""
    questions = arithmetic_questions(n_questions)
    results = []
    for backend in backends:
        model, info = chat_model(BackendChoice(backend, model_path, "cpu", None, {"max_tokens": max_tokens}))
        started = time.perf_counter()
        traces = _run_cot(model, info, [q for q, _ in questions], concurrency)
        wall = time.perf_counter() - started
        correct = sum(score(t.answer, q[1]).correct for t, q in zip(traces, questions))
        results.append({"backend": backend, "questions": n_questions, "wall_s": wall,
                        "questions_per_min": 60 * n_questions / wall, "correct": correct,
                        "errors": sum(t.status == "error" for t in traces)})
        if progress:
            progress(results[-1])
    return results


def _run_cot(model, info, questions: list[str], concurrency: int) -> list:
    template = load_shipped("cot_free")  # llama.cpp takes no Lark grammar: both sides decode the same free text
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda question: run_question("cot", question, model, info, template), questions))
