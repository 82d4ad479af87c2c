"""Prometheus metrics (`GET /metrics`, text format), named as vLLM names them where the two overlap.

From the engine, read at scrape time (Engine.stats()): vllm:num_requests_running / waiting,
vllm:kv_cache_usage_perc, vllm:prefix_cache_queries / hits (tokens), vllm:spec_decode_num_draft_tokens /
accepted_tokens. From the server, per request: vllm:time_to_first_token_seconds,
vllm:inter_token_latency_seconds, vllm:e2e_request_latency_seconds, vllm:prompt_tokens,
vllm:generation_tokens, vllm:request_success{finished_reason}; and ours, reason:requests_rejected{status}
(429 queue full, 413 body too large). Each app has its own registry, so several can live in one process.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response

LABELS = ["model_name"]
# vLLM's buckets, so dashboards built for it read ours the same way
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
               960.0, 1920.0, 7680.0)


class EngineCollector:
    """Gauges and counters of whatever engine `engine_of()` returns now (the web app swaps models)."""

    def __init__(self, engine_of: Callable[[], object], model_name: Callable[[object], str]):
        self.engine_of, self.model_name = engine_of, model_name

    def collect(self):
        engine = self.engine_of()
        if engine is None:
            return
        stats, label = engine.stats(), [self.model_name(engine)]
        total = stats.get("kv_blocks_total") or 1
        yield _gauge("vllm:num_requests_running", "Sequences in the running batch.", label, stats["running"])
        yield _gauge("vllm:num_requests_waiting", "Requests waiting to be admitted.", label, stats["waiting"])
        yield _gauge("vllm:kv_cache_usage_perc", "KV-cache usage: 1 means all blocks are in use.", label,
                     stats["kv_blocks_in_use"] / total)
        for name, key, text in (
                ("vllm:prefix_cache_queries", "prefix_cache_queries", "Prompt tokens looked up in the prefix cache."),
                ("vllm:prefix_cache_hits", "prefix_cache_hits", "Prompt tokens found in the prefix cache."),
                ("vllm:spec_decode_num_draft_tokens", "drafted_tokens", "Draft tokens proposed (prompt lookup)."),
                ("vllm:spec_decode_num_accepted_tokens", "accepted_tokens", "Draft tokens accepted.")):
            counter = CounterMetricFamily(name, text, labels=LABELS)
            counter.add_metric(label, stats.get(key, 0))
            yield counter


def _gauge(name: str, text: str, label: list[str], value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, text, labels=LABELS)
    gauge.add_metric(label, value)
    return gauge


class ServerMetrics:
    """One app's registry: the engine's numbers, the server's per-request ones, the process's."""

    def __init__(self, engine_of: Callable[[], object], model_name: str):
        self.model_name = model_name
        self.registry = registry = CollectorRegistry()
        registry.register(EngineCollector(engine_of, lambda engine: model_name))
        ProcessCollector(registry=registry)
        labelled = lambda cls, name, text, **kw: cls(name, text, LABELS + kw.pop("extra", []), registry=registry, **kw)  # noqa: E731
        self.ttft = labelled(Histogram, "vllm:time_to_first_token_seconds", "Time to the first token.", buckets=TTFT_BUCKETS)
        self.itl = labelled(Histogram, "vllm:inter_token_latency_seconds", "Time between tokens of a choice.",
                            buckets=ITL_BUCKETS)
        self.e2e = labelled(Histogram, "vllm:e2e_request_latency_seconds", "Request time, arrival to last token.",
                            buckets=E2E_BUCKETS)
        self.prompt_tokens = labelled(Counter, "vllm:prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = labelled(Counter, "vllm:generation_tokens", "Tokens generated.")
        self.success = labelled(Counter, "vllm:request_success", "Requests finished.", extra=["finished_reason"])
        self.rejected = Counter("reason:requests_rejected", "Requests refused before any work: 429 queue full, "
                                "413 body too large.", ["status"], registry=registry)

    def request(self, prompt_tokens: int) -> RequestClock:
        return RequestClock(self, prompt_tokens)

    def refused(self, status: int) -> None:
        if status in (413, 429):
            self.rejected.labels(str(status)).inc()

    def response(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def engine_metrics(engine_of: Callable[[], object]) -> Callable[[Request], Response]:
    """A /metrics endpoint with the engine's numbers only, labelled with the model file's stem: for a process
    that runs the engine without this server (the web app, whose model can be switched)."""
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine_of, lambda engine: Path(engine.path).stem))
    ProcessCollector(registry=registry)
    return lambda request: Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class RequestClock:
    """One request's timing from its events: first token, the gaps between a choice's tokens, the end."""

    def __init__(self, metrics: ServerMetrics, prompt_tokens: int):
        self.metrics, self.start, self.first = metrics, time.monotonic(), True
        self.last: dict[int, float] = {}
        self.reasons: dict[int, str] = {}
        metrics.prompt_tokens.labels(metrics.model_name).inc(prompt_tokens)

    def __call__(self, index: int, event) -> None:
        now, m = time.monotonic(), self.metrics
        if event.token_id is not None:
            if self.first:
                m.ttft.labels(m.model_name).observe(now - self.start)
                self.first = False
            if index in self.last:
                m.itl.labels(m.model_name).observe(now - self.last[index])
            self.last[index] = now
            m.generation_tokens.labels(m.model_name).inc()
        if event.finish_reason:
            self.reasons[index] = event.finish_reason

    def finish(self, choices: int) -> None:
        """The request ended (a choice without a finish reason was aborted: the client left or the server stopped)."""
        m = self.metrics
        m.e2e.labels(m.model_name).observe(time.monotonic() - self.start)
        for index in range(choices):
            reason = self.reasons.get(index, "abort")
            m.success.labels(m.model_name, "abort" if reason == "cancelled" else reason).inc()
