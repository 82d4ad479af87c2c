"""`reason bench engine`: our engine against llama-cpp-python on one GGUF, each in its own child process.

Prefill, single-stream greedy decode, time to first token, continuous-batch throughput (prompts sharing
a few-shot prefix) and peak resident memory; llama.cpp runs the batch one prompt after another, as its
users must, reusing the previous prompt's KV for the shared prefix.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

from .engine_variants import format_variants, measure_variants
from .questions import SHIPPED_QUESTIONS, load_questions


@dataclass(frozen=True)
class Sizes:
    batch_size: int = 64
    new_tokens: int = 128
    prompt_tokens: int = 512
    prefix_tokens: int = 600  # the few-shot exemplars repeat until the shared prefix reaches this
    repeats: int = 3  # prefill timings per side; the median is reported
    variants: bool = True  # also our options: speculative, batch-invariant, constrained, sampled
    threads: int | None = None  # CPU threads for both sides (default: all cores)

    def with_overrides(self, **overrides) -> Sizes:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


QUICK = Sizes(batch_size=4, new_tokens=8, prompt_tokens=32, prefix_tokens=0, repeats=1)


@dataclass(frozen=True)
class Workload:
    """The token ids both sides run, made once with our tokenizer so the two do identical work."""
    model_path: str
    device: str
    sizes: Sizes
    prompts: list[list[int]]  # repeats + 2 distinct prompt_tokens-long prompts: no prefix-cache hit between runs
    batch_texts: list[str]  # chat-formatted: the shared few-shot prefix, then one question each
    batch_ids: list[list[int]]
    prefix_tokens: int
    eos_id: int | None
    questions_source: str
    context: int  # llama.cpp's n_ctx: the longest prompt plus new tokens


def few_shot_prefix(engine, target_tokens: int) -> list[dict]:
    """System turn and the CoT template's exemplars, repeated until the rendered prefix has target_tokens."""
    from prompts.template import load_shipped

    template = load_shipped("cot")
    messages = [{"role": "system", "content": template.system}] if template.system.strip() else []
    turn = 0
    while turn < len(template.examples) or _count(engine, messages) < target_tokens:
        user, assistant = template.examples[turn % len(template.examples)]
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        turn += 1
    return messages


def _count(engine, messages: list[dict]) -> int:
    return len(engine.tokenizer.encode(engine.apply_chat_template(messages, add_generation_prompt=False))) if messages else 0


def build_workload(engine, model_path: str, device: str, sizes: Sizes, questions: list[str], source: str) -> Workload:
    """Prompts for prefill/decode (windows of the questions' text) and the batch (few-shot prefix + a question)."""
    tokenizer = engine.tokenizer
    bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    corpus = tokenizer.encode("\n".join(questions), add_bos=False)
    width, stride = sizes.prompt_tokens - len(bos), 7
    while len(corpus) < width + stride * (sizes.repeats + 2):
        corpus += corpus
    prompts = [bos + corpus[i * stride:i * stride + width] for i in range(sizes.repeats + 2)]
    prefix = few_shot_prefix(engine, sizes.prefix_tokens)
    texts = [engine.apply_chat_template(prefix + [{"role": "user", "content": q}]) for q in questions[:sizes.batch_size]]
    batch_ids = [tokenizer.encode(t) for t in texts]
    context = max(len(p) for p in prompts + batch_ids) + sizes.new_tokens + 1
    return Workload(model_path, device, sizes, prompts, texts, batch_ids, _count(engine, prefix), tokenizer.eos_id,
                    source, context)


def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM), from /proc or getrusage."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _say(verbose: bool, side: str, message: str) -> None:
    if verbose:
        print(f"[{side}] {message}", file=sys.stderr, flush=True)


# ---- ours -------------------------------------------------------------------------------------

def _ours_times(engine, ids: list[int], params) -> tuple[float, float, int]:
    """(seconds to the first token, seconds to the last, tokens generated) of one streamed request."""
    start = time.perf_counter()
    times = [time.perf_counter() - start for event in engine.submit(ids, params) if event.token_id is not None]
    return times[0], times[-1], len(times)


def first_load(model_path: str | None, device: str, weight_cache: str, kernels: str = "auto") -> float:
    """Seconds to load with this model's weight cache entry removed first: packing, as a model's first load does
    (the entry is then written in the background, and this process waits for it at exit)."""
    from engine import WeightCache, load_model
    from engine.loader import default_model_path

    WeightCache(weight_cache).forget(model_path or default_model_path())
    started = time.perf_counter()
    load_model(model_path, device=device, weight_cache=weight_cache, kernels=kernels).close()
    return time.perf_counter() - started


def run_ours(model_path: str | None, device: str, sizes: Sizes, questions: tuple[list[str], str],
             verbose: bool, weight_cache: str | None = None, kernels: str = "auto") -> tuple[Workload, dict]:
    """Load our engine, build the shared workload with its tokenizer, and measure every metric."""
    if sizes.threads:
        import torch

        torch.set_num_threads(sizes.threads)  # before the engine reads how many it may use
    from engine import load_model

    started = time.perf_counter()
    engine = load_model(model_path, device=device, weight_cache=weight_cache, kernels=kernels)
    load_s = time.perf_counter() - started
    try:
        workload = build_workload(engine, str(engine.path), device, sizes, *questions)
        _say(verbose, "ours", f"loaded in {load_s:.1f}s; few-shot prefix {workload.prefix_tokens} tokens")
        return workload, {"load_s": load_s, "kernels": engine.info["kernels"],
                          **_measure_ours(engine, workload, verbose)}
    finally:
        engine.close()  # stops the scheduler thread


def _measure_ours(engine, workload: Workload, verbose: bool) -> dict:
    from engine import SamplingParams

    sizes = workload.sizes
    greedy = SamplingParams(max_tokens=sizes.new_tokens,
                            logit_bias={workload.eos_id: -100.0} if workload.eos_id is not None else {})
    _ours_times(engine, workload.prompts[-1][:16], SamplingParams(max_tokens=2))  # warm-up
    prefill = [_ours_times(engine, ids, SamplingParams(max_tokens=1))[0] for ids in workload.prompts[:sizes.repeats]]
    first, last, n = _ours_times(engine, workload.prompts[sizes.repeats], greedy)
    _say(verbose, "ours", f"prefill and decode done; batch of {sizes.batch_size} x {sizes.new_tokens} tokens")
    started = time.perf_counter()
    completions = engine.generate(workload.batch_texts, greedy)
    batch_wall = time.perf_counter() - started
    _say(verbose, "ours", f"batch done in {batch_wall:.1f}s")
    out = _metrics(sizes.prompt_tokens, prefill, first, last, n, sum(len(c.token_ids) for c in completions), batch_wall)
    if sizes.variants:
        out["variants"] = measure_variants(engine, workload, greedy)
        _say(verbose, "ours", "options measured (speculative, batch-invariant, constrained, sampled)")
    return out


def _metrics(prompt_tokens, prefill_s, first, last, n, generated, batch_wall) -> dict:
    return {"prefill_tok_s": prompt_tokens / statistics.median(prefill_s),
            "decode_tok_s": (n - 1) / (last - first) if n > 1 else None, "decode_tokens": n, "ttft_s": first,
            "batch_tok_s": generated / batch_wall, "batch_wall_s": batch_wall, "batch_generated_tokens": generated,
            "peak_rss_bytes": peak_rss_bytes()}


# ---- llama.cpp --------------------------------------------------------------------------------

def _llama_stream(llm, ids: list[int], max_tokens: int, eos_id: int | None):
    """Greedy tokens after ids with EOS masked out, reusing the KV of the longest common prefix."""
    from llama_cpp import LogitsProcessorList

    def no_eos(_input_ids, scores):
        if eos_id is not None:
            scores[eos_id] = -float("inf")
        return scores

    stream = llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True,
                          logits_processor=LogitsProcessorList([no_eos]))
    for count, token in enumerate(stream, 1):
        yield token
        if count == max_tokens:
            return


def _llama_token_times(llm, ids: list[int], max_tokens: int, eos_id: int | None) -> tuple[float, float, int]:
    llm.reset()  # a fresh context: time to first token includes the whole prefill
    start = time.perf_counter()
    times = [time.perf_counter() - start for _ in _llama_stream(llm, ids, max_tokens, eos_id)]
    return times[0], times[-1], len(times)


def _llama_prefill_s(llm, ids: list[int]) -> float:
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    return time.perf_counter() - start


def run_llama_cpp(workload: Workload, verbose: bool) -> dict:
    """The same workload on llama-cpp-python: batch prompts run one after another on one Llama."""
    from llama_cpp import Llama
    from tqdm import tqdm

    sizes = workload.sizes
    started = time.perf_counter()
    llm = Llama(model_path=workload.model_path, n_ctx=workload.context, n_threads=sizes.threads or os.cpu_count(),
                n_batch=512,
                n_gpu_layers=-1 if workload.device == "cuda" else 0, verbose=False)
    load_s = time.perf_counter() - started
    _say(verbose, "llama.cpp", f"loaded in {load_s:.1f}s")
    _llama_token_times(llm, workload.prompts[-1][:16], 2, workload.eos_id)  # warm-up
    prefill = [_llama_prefill_s(llm, ids) for ids in workload.prompts[:sizes.repeats]]
    first, last, n = _llama_token_times(llm, workload.prompts[sizes.repeats], sizes.new_tokens, workload.eos_id)
    llm.reset()
    started = time.perf_counter()
    generated = 0
    for ids in tqdm(workload.batch_ids, desc="[llama.cpp] batch", unit="prompt", file=sys.stderr, disable=not verbose):
        generated += sum(1 for _ in _llama_stream(llm, ids, sizes.new_tokens, workload.eos_id))
    batch_wall = time.perf_counter() - started
    return {"load_s": load_s, **_metrics(sizes.prompt_tokens, prefill, first, last, n, generated, batch_wall)}


# ---- both, and the report ---------------------------------------------------------------------

def _in_child(fn, *args):
    """fn(*args) in a fresh spawned process, so each side's peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


RATIOS = ("prefill_tok_s", "decode_tok_s", "ttft_s", "batch_tok_s", "peak_rss_bytes", "load_s", "first_load_s")
TARGETS = {"batch_tok_s": 5.0, "decode_tok_s": 1.0}  # ours/llama.cpp with the default model


def bench_engine(model_path: str | None = None, device: str = "cpu", sizes: Sizes = Sizes(),
                 verbose: bool = False, questions_path: Path = SHIPPED_QUESTIONS, busy_core: bool = False,
                 weight_cache: Path | None = None, kernels: str = "auto") -> dict:
    """Run ours, then llama.cpp (never at once: they would share the cores), and compare.

    `busy_core`: a busy-loop neighbour holds one core throughout, as a browser or a build would.
    `weight_cache`: ours loads as users' commands do, mapping the packed weights its first load (timed
    in a child of its own before) wrote there; None: ours packs at load. `kernels`: as load_model's.
    """
    questions = load_questions(max(sizes.batch_size, 200), questions_path)  # read here: a bad file fails before loading
    cache = str(weight_cache) if weight_cache is not None else None
    with _busy_neighbour(busy_core):
        first_load_s = _in_child(first_load, model_path, device, cache, kernels) \
            if cache is not None and device == "cpu" else None
        load_before = {"ours": os.getloadavg()[0]}  # other work on the machine skews both sides
        workload, ours = _in_child(run_ours, model_path, device, sizes, questions, verbose, cache, kernels)
        ours["first_load_s"] = first_load_s
        load_before["llamacpp"] = os.getloadavg()[0]
        theirs = _in_child(run_llama_cpp, workload, verbose)
    report = _report(workload, ours, theirs, device, load_before)
    report["busy_neighbour"] = busy_core
    return report


@contextmanager
def _busy_neighbour(on: bool):
    """A child that spins on one core while the benchmark runs."""
    if not on:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def _report(workload: Workload, ours: dict, theirs: dict, device: str, load_before: dict) -> dict:
    theirs = {**theirs, "first_load_s": theirs["load_s"]}  # llama.cpp loads the same way every time
    ratios = {k: ours[k] / theirs[k] if ours.get(k) and theirs[k] else None for k in RATIOS}
    shape = {**workload.sizes.__dict__, "few_shot_prefix_tokens": workload.prefix_tokens,
             "batch_prompt_tokens_mean": statistics.mean(map(len, workload.batch_ids)),
             "questions": workload.questions_source}
    return {"model": workload.model_path, "gguf_bytes": os.path.getsize(workload.model_path), "device": device,
            "threads": workload.sizes.threads or os.cpu_count(), "cores": os.cpu_count(),
            "load_average_before": load_before, "workload": shape,
            "ours": ours, "llamacpp": theirs, "ratios": ratios,
            "targets": {k: {"min_ratio": v, "met": ratios[k] is not None and ratios[k] >= v} for k, v in TARGETS.items()}}


def format_table(report: dict) -> str:
    """The report as a plain-text table: metric | ours | llama.cpp | ours/llama.cpp."""
    w, s = report["workload"], report
    rows = [
        (f"prefill tok/s ({w['prompt_tokens']}-token prompt)", "prefill_tok_s", "{:.0f}", ""),
        (f"decode tok/s ({w['new_tokens']} tokens, greedy)", "decode_tok_s", "{:.1f}", ""),
        ("time to first token ms", "ttft_s", "{:.0f}", " (lower is better)", 1e3),
        (f"batch tok/s ({w['batch_size']} x {w['new_tokens']}, end to end)", "batch_tok_s", "{:.1f}", ""),
        ("batch wall s", "batch_wall_s", "{:.1f}", ""),
        ("peak RSS MiB", "peak_rss_bytes", "{:.0f}", " (lower is better)", 1 / 2**20),
        ("model load s", "load_s", "{:.2f}", " (lower is better)"),
    ]
    if s["ours"].get("first_load_s") is not None:  # ours mapped its weight cache; its first load packed
        rows += [("model load s, ours packing (first load)", "first_load_s", "{:.2f}", "")]
    lines = [f"{'metric':<44} {'ours':>10} {'llama.cpp':>10} {'ratio':>7}"]
    for label, key, fmt, note, *scale in rows:
        cells = [_cell(s[side].get(key), fmt, scale[0] if scale else 1) for side in ("ours", "llamacpp")]
        ratio = s["ratios"].get(key)
        lines.append(f"{label:<44} {cells[0]:>10} {cells[1]:>10} {_cell(ratio, '{:.2f}x', 1):>7}{note}")
    cores = s.get("cores", s["threads"])  # reports before --threads had one number
    lines += [f"model {Path(s['model']).name}: {s['gguf_bytes'] / 2**20:.1f} MiB GGUF; device {s['device']}; "
              f"{s['threads']} threads of {cores} cores; ours' int4 kernel: {s['ours'].get('kernels')}",
              f"few-shot prefix {w['few_shot_prefix_tokens']} tokens, batch prompts {w['batch_prompt_tokens_mean']:.0f} "
              f"tokens on average; questions: {w['questions']}",
              f"1-min load average before each side: ours {s['load_average_before']['ours']:.1f}, "
              f"llama.cpp {s['load_average_before']['llamacpp']:.1f}"
              + (" (machine busy: numbers are noisy)" if max(s["load_average_before"].values()) > cores else ""),
              "targets: " + ", ".join(f"{k} >= {t['min_ratio']}x {'met' if t['met'] else 'NOT met'}"
                                      for k, t in s["targets"].items())]
    if s.get("busy_neighbour"):
        lines.append("a busy-loop neighbour held one core throughout")
    return "\n".join(lines) + format_variants(s["ours"])


def _cell(value, fmt: str, scale: float) -> str:
    return "-" if value is None else fmt.format(value * scale)
