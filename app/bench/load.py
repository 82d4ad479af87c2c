"""`reason bench engine --shape NAME`: load a model of that shape and generate one stream, ours vs llama.cpp.

The files: random-weight GGUFs of the shape in llama.cpp's Q4_0 and Q4_K_M recipes (gguf_shapes), and
the default model. Each side loads each file in a fresh process and reports load time, peak resident
memory, prefill and decode speed and time to first token (batch 1, greedy): first with the file in the
page cache (read through once before), then cold (posix_fadvise DONTNEED before the run; checked with
mincore, and reported when the kernel kept pages anyway). llama.cpp runs as it runs best here: mmap
on, n_batch 512, a thread per core. With a weight cache (as `reason` commands load by default), ours
first loads each file with its cache entry removed (it packs, and writes the entry) and is then
measured mapping that entry; cold, the entry's file leaves the page cache with the GGUF.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .engine import _llama_token_times, _ours_times, peak_rss_bytes
from .gguf_shapes import RECIPES, shaped_gguf

METRICS = ("load_s", "load_cpu_s", "peak_rss_bytes", "prefill_tok_s", "decode_tok_s", "ttft_s")
TARGETS = {"load_s": 1.5, "peak_rss_bytes": 1.2}  # ours / llama.cpp, at most, on the shaped files
DEFAULT_MODEL_RSS_TARGET = 2.0


@dataclass(frozen=True)
class Run:
    side: str  # "ours" or "llamacpp"
    path: str
    prompt: list[int]
    new_tokens: int
    eos_id: int | None
    weight_cache: str | None = None  # ours: the folder of packed weights it maps or writes
    kernels: str = "auto"  # ours: as load_model's


def default_work_dir() -> Path:
    import tempfile

    return Path(tempfile.gettempdir()) / "reason-bench"


def bench_load(shape: str, work_dir: Path, prompt_tokens: int = 128, new_tokens: int = 16, cold: bool = True,
               say=lambda _: None, weight_cache: Path | None = None, kernels: str = "auto") -> dict:
    """Every file x (warm, cold) x (ours, llama.cpp), one fresh process each; ratios ours / llama.cpp."""
    from engine.loader import default_model_path

    files = {f"{shape} {r}": shaped_gguf(shape, r, work_dir, say) for r in RECIPES}
    files["default model"] = default_model_path()
    cache_folder = str(weight_cache) if weight_cache is not None else None
    rows = []
    for label, path in files.items():
        prompt, eos = _prompt(path, prompt_tokens)
        for cache in ("warm", "cold") if cold else ("warm",):
            row = {"file": label, "path": str(path), "gguf_bytes": os.path.getsize(path), "cache": cache}
            if cache_folder is not None and cache == "warm":
                row["ours_first"] = _first_load(Run("ours", str(path), prompt, new_tokens, eos, cache_folder, kernels),
                                                say)
            for side in ("ours", "llamacpp"):
                row[f"{side}_cache"] = _prepare(path, cache, say, cache_folder if side == "ours" else None)
                row[f"{side}_load_average"] = os.getloadavg()[0]
                say(f"{label}, {cache}: {side}")
                row[side] = in_fresh_process(Run(side, str(path), prompt, new_tokens, eos,
                                                 cache_folder if side == "ours" else None, kernels))
            row["ratios"] = {k: _ratio(row["ours"][k], row["llamacpp"][k]) for k in METRICS}
            rows.append(row)
    return {"shape": shape, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "threads": os.cpu_count(),
            "rows": rows, "targets": _targets(rows, shape)}


def _ratio(ours, theirs):
    return ours / theirs if ours and theirs else None


def _prompt(path: Path, n: int) -> tuple[list[int], int | None]:
    """n token ids the same for both sides: BOS, then ids drawn from the ordinary part of the vocabulary."""
    from engine.gguf_file import GGUFFile

    gguf = GGUFFile(path)
    vocab, bos, eos = len(gguf.require("tokenizer.ggml.tokens")), gguf.get("tokenizer.ggml.bos_token_id"), \
        gguf.get("tokenizer.ggml.eos_token_id")
    rng = np.random.default_rng(0)
    body = rng.integers(min(300, vocab // 2), vocab, n).tolist()
    return ([bos] + body[:n - 1]) if bos is not None else body, eos


def _first_load(run: Run, say) -> dict:
    """Ours with the file's weight cache entry removed: it packs (and writes the entry), as a first load does."""
    from engine import WeightCache

    WeightCache(run.weight_cache).forget(run.path)
    _prepare(Path(run.path), "warm", say)
    say(f"{Path(run.path).name}: ours, first load (packs, writes its weight cache entry)")
    return in_fresh_process(run)


def _prepare(path: Path, cache: str, say, weight_cache: str | None = None) -> dict:
    """Warm: read the file (and its weight cache entry, which ours maps) through once. Cold: ask the kernel
    to drop their cached pages, and check."""
    entries = [Path(e["path"]) for e in _cache_entries(weight_cache, path)]
    os.sync()  # a first load's new weight cache entry is written back now, not during the next side's run
    if cache == "warm":
        started = time.perf_counter()
        for file in [path, *entries]:
            with open(file, "rb", buffering=0) as f:
                buf = bytearray(16 << 20)
                while f.readinto(buf):
                    pass
        return {"read_s": time.perf_counter() - started, "resident_fraction": resident_fraction(path)}
    for file in [path, *entries]:
        with open(file, "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    fraction = resident_fraction(path)
    if fraction is not None and fraction > 0.05:
        say(f"posix_fadvise(DONTNEED) left {fraction:.0%} of {path.name} in the page cache: this 'cold' run is not cold")
    return {"resident_fraction": fraction}


def _cache_entries(weight_cache: str | None, path: Path) -> list[dict]:
    if weight_cache is None:
        return []
    from engine import WeightCache

    return WeightCache(weight_cache).entries_of(path)


def resident_fraction(path: Path) -> float | None:
    """Share of the file's pages in the page cache (mincore(2)); None where it cannot be asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = np.frombuffer(m, np.uint8)
            pages = -(-len(m) // mmap.PAGESIZE)
            vec = (ctypes.c_ubyte * pages)()
            ok = libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(len(m)), vec) == 0
            del view
        return float(np.frombuffer(vec, np.uint8).astype(bool).mean()) if ok else None
    except (OSError, AttributeError, ValueError):
        return None


def in_fresh_process(run: Run) -> dict:
    """measure(run) in `python -m app.bench.load`: a process that imports only what its side needs (a
    multiprocessing child would import the parent's `reason` CLI first and count it in its memory)."""
    done = subprocess.run([sys.executable, "-m", "app.bench.load", json.dumps(asdict(run))],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{run.side} on {run.path} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


DECODE_STREAMS = 3  # decode speed is the median of this many streams: one swings ±25% on a shared machine


def measure(run: Run) -> dict:
    """In a fresh process: load, warm up on 8 other tokens, then greedy streams after the prompt: the first
    gives prefill and time to first token, the median of all DECODE_STREAMS the decode speed."""
    if run.side == "ours":  # imports are not loading: both sides import first
        from engine import load_model  # noqa: F401
    else:
        from llama_cpp import Llama  # noqa: F401
    started, cpu = time.perf_counter(), time.process_time()
    model = _load(run)
    out = {"load_s": time.perf_counter() - started, "load_cpu_s": time.process_time() - cpu,  # all threads
           "load_peak_rss_bytes": peak_rss_bytes()}
    try:
        streams = [_stream(model, run, warm_up=i == 0) for i in range(DECODE_STREAMS)]
    finally:
        if run.side == "ours":
            model.close()
    first, _, n = streams[0]
    rates = [(count - 1) / (end - start) for start, end, count in streams if count > 1]
    return {**out, "ttft_s": first, "prefill_tok_s": len(run.prompt) / first,
            "decode_tok_s": statistics.median(rates) if rates else None, "decode_streams_tok_s": rates,
            "decode_tokens": n, "peak_rss_bytes": peak_rss_bytes()}


def _load(run: Run):
    if run.side == "ours":
        from engine import load_model

        return load_model(run.path, device="cpu", weight_cache=run.weight_cache, kernels=run.kernels)
    from llama_cpp import Llama

    threads = os.cpu_count()
    return Llama(model_path=run.path, n_ctx=len(run.prompt) + run.new_tokens + 16, n_threads=threads,
                 n_threads_batch=threads, n_batch=512, use_mmap=True, verbose=False)


def _stream(model, run: Run, warm_up: bool = True) -> tuple[float, float, int]:
    other = run.prompt[:1] + run.prompt[:0:-1][:7]  # other tokens: no prefix to reuse
    if run.side == "llamacpp":
        if warm_up:
            _llama_token_times(model, other, 2, run.eos_id)
        return _llama_token_times(model, run.prompt, run.new_tokens, run.eos_id)
    from engine import SamplingParams

    if warm_up:
        _ours_times(model, other, SamplingParams(max_tokens=2))
    bias = {run.eos_id: -100.0} if run.eos_id is not None else {}
    return _ours_times(model, run.prompt, SamplingParams(max_tokens=run.new_tokens, logit_bias=bias))


def _targets(rows: list[dict], shape: str) -> list[dict]:
    out = []
    for row in rows:
        shaped = row["file"].startswith(shape)
        limits = TARGETS if shaped else {"peak_rss_bytes": DEFAULT_MODEL_RSS_TARGET}
        for key, limit in limits.items():
            ratio = row["ratios"][key]
            out.append({"file": row["file"], "cache": row["cache"], "metric": key, "max_ratio": limit,
                        "ratio": ratio, "met": ratio is not None and ratio <= limit})
    return out


def format_load_table(report: dict) -> str:
    """One line per file, cache state and metric: ours | llama.cpp | ratio."""
    cells = {"load_s": ("load s", "{:.2f}", 1), "load_cpu_s": ("load CPU s (all threads)", "{:.2f}", 1),
             "peak_rss_bytes": ("peak RSS MiB", "{:.0f}", 1 / 2**20),
             "prefill_tok_s": ("prefill tok/s", "{:.1f}", 1), "decode_tok_s": ("decode tok/s", "{:.2f}", 1),
             "ttft_s": ("time to first token s", "{:.2f}", 1)}
    lines = [f"{'file':<22} {'cache':<5} {'metric':<24} {'ours':>9} {'llama.cpp':>9} {'ratio':>6}"]
    for row in report["rows"]:
        for key, (label, fmt, scale) in cells.items():
            values = [_cell(row[side][key], fmt, scale) for side in ("ours", "llamacpp")]
            lines.append(f"{row['file']:<22} {row['cache']:<5} {label:<24} {values[0]:>9} {values[1]:>9} "
                         f"{_cell(row['ratios'][key], '{:.2f}', 1):>6}")
        if "ours_first" in row:
            first = row["ours_first"]
            for key in ("load_s", "load_cpu_s", "peak_rss_bytes"):
                label, fmt, scale = cells[key]
                lines.append(f"{row['file']:<22} {row['cache']:<5} {label + ', 1st':<24} {_cell(first[key], fmt, scale):>9} "
                             f"{_cell(row['llamacpp'][key], fmt, scale):>9} "
                             f"{_cell(_ratio(first[key], row['llamacpp'][key]), '{:.2f}', 1):>6}")
        loads = ", ".join(f"{side} {row[f'{side}_load_average']:.1f}" for side in ("ours", "llamacpp"))
        resident = ", ".join(f"{side} {_cell(row[f'{side}_cache']['resident_fraction'], '{:.0%}', 1)}"
                             for side in ("ours", "llamacpp"))
        lines.append(f"{'':<22} {row['cache']:<5} 1-min load before: {loads}; file in page cache: {resident}")
    lines.append(f"prompt {report['prompt_tokens']} tokens, {report['new_tokens']} new (greedy, batch 1); "
                 f"{report['threads']} threads; decode: the median of {DECODE_STREAMS} streams")
    for row in report["rows"]:
        streams = "; ".join(f"{side} " + " ".join(f"{rate:.2f}" for rate in row[side].get("decode_streams_tok_s", []))
                            for side in ("ours", "llamacpp"))
        lines.append(f"{row['file']:<22} {row['cache']:<5} decode tok/s of each stream: {streams}")
    if any("ours_first" in row for row in report["rows"]):
        lines.append("ours maps its weight cache; '1st': ours packing, the first load of the file, which writes the entry")
    lines += [f"target {t['file']} {t['cache']} {t['metric']} <= {t['max_ratio']}x: "
              f"{_cell(t['ratio'], '{:.2f}x', 1)} {'met' if t['met'] else 'NOT met'}" for t in report["targets"]]
    return "\n".join(lines)


def _cell(value, fmt: str, scale: float) -> str:
    return "-" if value is None else fmt.format(value * scale)


if __name__ == "__main__":
    print(json.dumps(measure(Run(**json.loads(sys.argv[1])))))
