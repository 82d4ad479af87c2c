"""`reason bench sampling`: our sampler against the usual sort-based top-p, side by side in one process."""
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
            results.append({"vocab": vocab, "batch": batch, **_compare(logits, states, generator, dev)})
            if progress:
                progress(results[-1])
    return results


def _compare(logits: torch.Tensor, states: list[SamplerState], generator: torch.Generator, device: torch.device) -> dict:
    ours = _time_per_call(lambda: sample(logits, states), device)
    reference = _time_per_call(lambda: sort_based_top_p(logits, 0.8, 0.9, generator), device)
    return {"ours_ms": ours * 1e3, "sort_top_p_ms": reference * 1e3, "speedup": reference / ours}
