"""Stored runs as OpenTelemetry spans, after the GenAI semantic conventions (so Langfuse or Phoenix read them).

A run is an `invoke_agent {strategy}` span; each model call in its trace a `chat {model}` span
(gen_ai.request.model, gen_ai.usage.input/output_tokens, gen_ai.response.finish_reasons), each tool
call an `execute_tool {tool}` span. Spans are made from the stored Trace when `record_run` finishes a
run, with the times the trace recorded, so what is exported is what the store holds. Prompt and
completion text (gen_ai.input/output.messages, tool arguments and results) only when content
capture is on. Installed once by the entry points from Settings (OTEL_EXPORTER_OTLP_* variables).
"""
from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from prompts.trace import Step, Trace

from .settings import Settings

if TYPE_CHECKING:  # OpenTelemetry loads only when runs are exported (its import costs ~0.2 s)
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

PROVIDER = "reason-studio"  # gen_ai.provider.name: the local engine, or the OpenAI-compatible server it called
SAMPLING_ATTRIBUTES = {"temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p",
                       "top_k": "gen_ai.request.top_k", "max_tokens": "gen_ai.request.max_tokens",
                       "seed": "gen_ai.request.seed"}


class RunSpans:
    """Turns stored traces into spans on `provider`; `capture_content` adds the text of prompts and outputs."""

    def __init__(self, provider: TracerProvider, capture_content: bool = False):
        self.provider, self.capture_content = provider, capture_content
        self.tracer = provider.get_tracer("reason-studio.runs")

    @classmethod
    def over_otlp(cls, url: str, capture_content: bool = False) -> RunSpans:
        """Spans batched and posted to an OTLP/HTTP collector at `url` (…/v1/traces)."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": PROVIDER}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        return cls(provider, capture_content)

    def export(self, run_id: str, trace: Trace, correct: bool | None = None) -> None:
        """The run's spans: the agent span, and one child per model or tool call, ended at their recorded times."""
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        start = _ns(datetime.fromisoformat(trace.started_at).timestamp())
        end = start + int(trace.duration_ms * 1e6)
        agent = self.tracer.start_span(f"invoke_agent {trace.strategy}", kind=SpanKind.INTERNAL, start_time=start,
                                       attributes=self._agent_attributes(run_id, trace, correct))
        context = set_span_in_context(agent)
        for step in trace.steps:
            if step.kind in ("llm", "tool"):
                self._step_span(step, trace, context, start, end)
            else:  # a parse error or a vote: a moment in the run, not a call
                agent.add_event(f"reason.{step.kind}", {"reason.step.name": step.name, "reason.step.error": step.error or ""},
                                timestamp=_step_start(step, start))
        if trace.status == "error":
            agent.set_status(Status(StatusCode.ERROR, (trace.error or "")[:500]))
        agent.end(end_time=max(end, start))

    def _agent_attributes(self, run_id: str, trace: Trace, correct: bool | None) -> dict:
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": trace.strategy,
                      "gen_ai.agent.id": f"{trace.template_name}@{trace.template_version}",
                      "gen_ai.provider.name": PROVIDER, "gen_ai.request.model": trace.model_id,
                      "gen_ai.conversation.id": run_id, "gen_ai.usage.input_tokens": trace.prompt_tokens,
                      "gen_ai.usage.output_tokens": trace.completion_tokens, "reason.run.id": run_id,
                      "reason.run.status": trace.status, "reason.backend": trace.backend}
        if correct is not None:
            attributes["reason.run.correct"] = correct
        if self.capture_content:
            attributes["gen_ai.input.messages"] = _messages("user", trace.question)
            attributes["gen_ai.output.messages"] = _messages("assistant", trace.answer or "")
        return attributes

    def _step_span(self, step: Step, trace: Trace, context, run_start: int, run_end: int) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        start = min(max(_step_start(step, run_start), run_start), run_end)
        attributes = self._chat(step, trace) if step.kind == "llm" else self._tool(step)
        name = f"chat {trace.model_id}" if step.kind == "llm" else f"execute_tool {step.name}"
        kind = SpanKind.CLIENT if step.kind == "llm" else SpanKind.INTERNAL
        span = self.tracer.start_span(name, context=context, kind=kind, start_time=start, attributes=attributes)
        if step.error:
            span.set_status(Status(StatusCode.ERROR, step.error[:500]))
            span.set_attribute("error.type", "tool_error" if step.kind == "tool" else "model_error")
        span.end(end_time=min(start + int(step.duration_ms * 1e6), max(run_end, start)))

    def _chat(self, step: Step, trace: Trace) -> dict:
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": PROVIDER,
                      "gen_ai.request.model": trace.model_id, "gen_ai.response.model": trace.model_id,
                      "gen_ai.usage.input_tokens": step.prompt_tokens, "gen_ai.usage.output_tokens": step.completion_tokens,
                      "reason.step.name": step.name}
        if step.meta.get("finish_reason"):
            attributes["gen_ai.response.finish_reasons"] = [str(step.meta["finish_reason"])]
        for key, attribute in SAMPLING_ATTRIBUTES.items():
            if isinstance(trace.sampling.get(key), int | float) and not isinstance(trace.sampling.get(key), bool):
                attributes[attribute] = trace.sampling[key]
        if self.capture_content:
            attributes["gen_ai.input.messages"] = _messages("user", step.input)
            attributes["gen_ai.output.messages"] = _messages("assistant", step.output, step.meta.get("reasoning"))
        return attributes

    def _tool(self, step: Step) -> dict:
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": step.name,
                      "gen_ai.tool.type": "function"}
        if self.capture_content:
            attributes["gen_ai.tool.call.arguments"] = step.input
            attributes["gen_ai.tool.call.result"] = step.output
        return attributes


def _messages(role: str, text: str, reasoning: str | None = None) -> str:
    """GenAI's message JSON: one message of text parts (reasoning first, when the model thought aloud)."""
    parts = ([{"type": "reasoning", "content": reasoning}] if reasoning else []) + [{"type": "text", "content": text}]
    return json.dumps([{"role": role, "parts": parts}], ensure_ascii=False)


def _ns(epoch_s: float) -> int:
    return int(epoch_s * 1e9)


def _step_start(step: Step, default: int) -> int:
    started = step.meta.get("started_at")
    return _ns(started) if isinstance(started, int | float) else default


_installed: RunSpans | None = None


def install(settings: Settings) -> RunSpans | None:
    """Export runs over OTLP/HTTP when the settings name a collector (once per process); returns the exporter."""
    global _installed
    if _installed is None and settings.otel_traces_url:
        _installed = RunSpans.over_otlp(settings.otel_traces_url, settings.otel_capture_content)
        log.info("runs are exported as OpenTelemetry spans to %s", settings.otel_traces_url)
    return _installed


def use(spans: RunSpans | None) -> RunSpans | None:
    """Make `spans` the exporter of this process (tests, embedding); returns the one it replaces."""
    global _installed
    previous, _installed = _installed, spans
    return previous


def export_run(run_id: str, trace: Trace, correct: bool | None = None) -> None:
    """Export a finished run when an exporter is installed; a failure is logged, never raised (the run is stored)."""
    if _installed is None:
        return
    try:
        _installed.export(run_id, trace, correct)
    except Exception as exc:  # noqa: BLE001 - telemetry must never fail a run
        log.warning("could not export run %s as spans: %s: %s", run_id, type(exc).__name__, exc)
