"""`reason bench serve`: our OpenAI-compatible server against llama-cpp-python's own, same GGUF, same load.

Each server runs in its own child process. N clients stream greedy chat completions of the same
questions for S seconds (requests in flight at the end run to completion), one server after the
other; we report requests/s, output tokens/s, and p50/p99 time to first token and inter-token latency.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds app/: `-m app.cli` imports this very copy
START_TIMEOUT_S = 300
METRICS = ("requests_per_s", "output_tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")


@dataclass(frozen=True)
class Load:
    clients: int = 16
    seconds: float = 30.0
    max_tokens: int = 64


@dataclass
class _Tally:
    """What the clients saw: per finished request its TTFT, its gaps between tokens, its token count."""
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    completed: int = 0
    rejected: int = 0  # 429/503: the server said it was busy
    errors: list[str] = field(default_factory=list)


def bench_serve(model_path: str | None, load: Load = Load(), device: str = "cpu", progress=None) -> dict:
    """Both servers under the same load, one after the other; results per server and ours/llama.cpp ratios."""
    from engine.loader import default_model_path

    from .questions import arithmetic_questions

    path = Path(model_path) if model_path else default_model_path()
    if not path.is_file():
        raise ValueError(f"model file not found: {path} (give the path of a .gguf file)")
    questions = [q for q, _ in arithmetic_questions(64)]
    results = []
    for name, command in (("ours", _ours), ("llamacpp", _llama_cpp)):
        port = free_port()
        with _child_server(command(path, port, device), port) as url:
            results.append({"server": name, **asyncio.run(_run_load(url, questions, load))})
        if progress:
            progress(results[-1])
    ours, theirs = results
    ratios = {m: ours[m] / theirs[m] if theirs[m] else None for m in METRICS}
    return {"model": str(path), "device": device, "load": asdict(load), "results": results,
            "ours_over_llamacpp": ratios}


def _ours(path: Path, port: int, device: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", "serve", "--model", str(path), "--port", str(port), "--device", device]


def _llama_cpp(path: Path, port: int, device: str) -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 1),
            "--interrupt_requests", "False",  # by default a new request aborts the one streaming
            "--n_gpu_layers", "-1" if device == "cuda" else "0"]


def free_port() -> int:
    """A loopback port nothing listens on now (the tests that start servers use it too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _child_server(command: list[str], port: int):
    """Start a server process, wait until it lists its models, yield its base URL; stop it on exit."""
    url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:
        child = subprocess.Popen(command, cwd=PACKAGE_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(url, child, log)
            yield url
        finally:
            stop_child(child, 30)


def stop_child(child: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within timeout_s."""
    child.terminate()
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _wait_until_up(url: str, child: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(child.args[:4])} exited with {child.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)  # polling a child process that is loading a model
    raise RuntimeError(f"{' '.join(child.args[:4])} did not answer within {START_TIMEOUT_S} s")


async def _run_load(url: str, questions: list[str], load: Load) -> dict:
    tally = _Tally()
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600),
                                 limits=httpx.Limits(max_connections=load.clients + 1)) as client:
        model = (await client.get("/models")).json()["data"][0]["id"]
        await _one_request(client, model, questions[0], 4, _Tally())  # warm-up, not counted
        started = time.perf_counter()
        deadline = started + load.seconds
        await asyncio.gather(*(_client(client, model, questions[i::load.clients] or questions, load, deadline, tally)
                               for i in range(load.clients)))
        wall = time.perf_counter() - started
    return _summary(tally, wall)


async def _client(client: httpx.AsyncClient, model: str, questions: list[str], load: Load, deadline: float,
                  tally: _Tally) -> None:
    i = 0
    while time.perf_counter() < deadline:
        try:
            retry_after = await _one_request(client, model, questions[i % len(questions)], load.max_tokens, tally)
        except httpx.HTTPError as exc:  # a dropped stream counts against the server, the run goes on
            tally.errors.append(f"{type(exc).__name__}: {exc}")
            retry_after = 0.0
        i += 1
        if retry_after:
            await asyncio.sleep(retry_after)


async def _one_request(client: httpx.AsyncClient, model: str, question: str, max_tokens: int, tally: _Tally) -> float:
    """Stream one chat completion into the tally; returns the seconds to back off when the server was busy."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    sent = time.perf_counter()
    times = []
    async with client.stream("POST", "/chat/completions", json=body) as reply:
        if reply.status_code in (429, 503):
            tally.rejected += 1
            return float(reply.headers.get("Retry-After", 1))
        if reply.status_code != 200:
            tally.errors.append(f"{reply.status_code}: {(await reply.aread())[:200]!r}")
            return 0.0
        async for line in reply.aiter_lines():
            if line.startswith("data: {") and _has_content(line):
                times.append(time.perf_counter())
    if times:
        tally.ttft.append(times[0] - sent)
        tally.gaps += [b - a for a, b in zip(times, times[1:])]
    tally.tokens += len(times)
    tally.completed += 1
    return 0.0


def _has_content(line: str) -> bool:
    choices = json.loads(line.removeprefix("data: ")).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


def _summary(tally: _Tally, wall: float) -> dict:
    ms = lambda values, q: 1000 * _percentile(values, q)  # noqa: E731
    return {"completed": tally.completed, "rejected": tally.rejected, "errors": len(tally.errors),
            "first_errors": tally.errors[:3], "wall_s": wall, "output_tokens": tally.tokens,
            "requests_per_s": tally.completed / wall, "output_tokens_per_s": tally.tokens / wall,
            "ttft_p50_ms": ms(tally.ttft, 0.5), "ttft_p99_ms": ms(tally.ttft, 0.99),
            "itl_p50_ms": ms(tally.gaps, 0.5), "itl_p99_ms": ms(tally.gaps, 0.99)}


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def format_report(report: dict) -> str:
    """The results as a table, then the ratios (throughput: higher is better for us; latency: lower)."""
    load = report["load"]
    lines = [f"{load['clients']} streaming clients for {load['seconds']:g} s, max_tokens {load['max_tokens']}, "
             f"greedy, on {report['device']}: {report['model']}",
             f"{'server':<9} {'done':>5} {'429':>4} {'err':>4} {'req/s':>7} {'tok/s':>8} {'TTFT p50':>9} "
             f"{'p99':>8} {'ITL p50':>8} {'p99':>8}"]
    for r in report["results"]:
        lines.append(f"{r['server']:<9} {r['completed']:>5} {r['rejected']:>4} {r['errors']:>4} "
                     f"{r['requests_per_s']:>7.2f} {r['output_tokens_per_s']:>8.1f} {r['ttft_p50_ms']:>7.0f}ms "
                     f"{r['ttft_p99_ms']:>6.0f}ms {r['itl_p50_ms']:>6.1f}ms {r['itl_p99_ms']:>6.1f}ms")
    ratios = report["ours_over_llamacpp"]
    lines.append("ours / llama.cpp: " + ", ".join(f"{m} {v:.2f}x" for m, v in ratios.items() if v is not None))
    return "\n".join(lines)
