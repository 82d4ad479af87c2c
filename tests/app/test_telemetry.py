"""Runs as OpenTelemetry spans (GenAI semantic conventions): shapes checked on an in-memory exporter, the
real OTLP/HTTP exporter checked against a tiny local collector, content only when capture is on."""
import json
import time
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from langchain_core.language_models import FakeListChatModel
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from app import telemetry
from app.runner import record_run
from app.settings import Settings
from app.store import Store
from prompts.trace import RunInfo, Step, Trace
from tests.live_server import serve_in_thread


def sample_trace() -> Trace:
    now = time.time()
    trace = Trace(question="What is 6 x 7?", strategy="pal", template_name="pal", template_version=2,
                  model_id="tiny", backend="engine", sampling={"temperature": 0.7, "max_tokens": 256, "stop": ["\n"]},
                  started_at=datetime.fromtimestamp(now - 2, UTC).isoformat())
    trace.steps = [
        Step(kind="llm", name="program", input="Write a program", output="def solution(): return 6 * 7",
             prompt_tokens=40, completion_tokens=12, duration_ms=800,
             meta={"started_at": now - 1.9, "finish_reason": "stop", "reasoning": "multiply"}),
        Step(kind="tool", name="sandbox", input="def solution(): return 6 * 7", output="42", duration_ms=300,
             meta={"started_at": now - 1.0}),
        Step(kind="tool", name="sandbox", input="import os", output="", error="ImportError: os", duration_ms=10,
             meta={"started_at": now - 0.6}),
        Step(kind="vote", name="vote", input="42, 42", output="42", meta={"started_at": now - 0.1}),
    ]
    trace.finish("42")
    trace.duration_ms = 2000  # as if it had run for the two seconds since started_at
    return trace


def in_memory(capture_content: bool = False) -> tuple[telemetry.RunSpans, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return telemetry.RunSpans(provider, capture_content), exporter


def test_a_run_is_an_agent_span_with_chat_and_tool_children():
    spans, exporter = in_memory()
    trace = sample_trace()
    spans.export("run-1", trace, correct=True)
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    agent, chat = by_name["invoke_agent pal"], by_name["chat tiny"]
    tools = [s for s in exporter.get_finished_spans() if s.name == "execute_tool sandbox"]
    assert len(exporter.get_finished_spans()) == 4 and len(tools) == 2
    assert agent.parent is None and all(s.parent.span_id == agent.context.span_id for s in [chat, *tools])
    assert agent.attributes["gen_ai.operation.name"] == "invoke_agent" and agent.attributes["gen_ai.agent.name"] == "pal"
    assert agent.attributes["gen_ai.request.model"] == "tiny" and agent.attributes["gen_ai.usage.input_tokens"] == 40
    assert agent.attributes["reason.run.id"] == "run-1" and agent.attributes["reason.run.correct"] is True
    assert chat.attributes["gen_ai.operation.name"] == "chat" and chat.attributes["gen_ai.usage.output_tokens"] == 12
    assert tuple(chat.attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert chat.attributes["gen_ai.request.temperature"] == 0.7 and chat.attributes["gen_ai.request.max_tokens"] == 256
    assert tools[0].attributes["gen_ai.tool.name"] == "sandbox" and tools[0].status.status_code == StatusCode.UNSET
    assert tools[1].status.status_code == StatusCode.ERROR and tools[1].attributes["error.type"] == "tool_error"
    assert [e.name for e in agent.events] == ["reason.vote"]
    assert agent.start_time <= chat.start_time < chat.end_time <= tools[0].start_time <= agent.end_time
    assert abs((chat.end_time - chat.start_time) / 1e6 - 800) < 1  # the trace's own timings
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.tool.call"))
                   for s in exporter.get_finished_spans() for k in s.attributes)  # no content unless asked


def test_content_only_when_capture_is_on():
    spans, exporter = in_memory(capture_content=True)
    spans.export("run-2", sample_trace())
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    output = json.loads(by_name["chat tiny"].attributes["gen_ai.output.messages"])
    assert output == [{"role": "assistant", "parts": [{"type": "reasoning", "content": "multiply"},
                                                      {"type": "text", "content": "def solution(): return 6 * 7"}]}]
    assert json.loads(by_name["invoke_agent pal"].attributes["gen_ai.input.messages"])[0]["parts"][0]["content"] == \
        "What is 6 x 7?"
    assert by_name["execute_tool sandbox"].attributes["gen_ai.tool.call.result"] in ("42", "")


def test_record_run_exports_what_it_stores(tmp_path):
    spans, exporter = in_memory()
    previous = telemetry.use(spans)
    store = Store(tmp_path / "reason.db")
    try:
        run_id, trace, _ = record_run(store, "What is 2 + 3?", "cot", FakeListChatModel(responses=["So the answer is 5."]),
                                      RunInfo(model_id="scripted", backend="test"), expected="5")
    finally:
        telemetry.use(previous)
        store.close()
    agent = next(s for s in exporter.get_finished_spans() if s.name == "invoke_agent cot")
    assert agent.attributes["reason.run.id"] == run_id and agent.attributes["reason.run.status"] == trace.status
    assert [s.name for s in exporter.get_finished_spans()].count("chat scripted") == len(trace.steps)


def test_an_exporter_that_fails_never_fails_the_run(tmp_path):
    class Broken:
        def export(self, *args):
            raise RuntimeError("collector down")

    previous = telemetry.use(Broken())
    store = Store(tmp_path / "reason.db")
    try:
        _, trace, _ = record_run(store, "2 + 3?", "direct", FakeListChatModel(responses=["5"]), RunInfo())
    finally:
        telemetry.use(previous)
        store.close()
    assert trace.answer == "5"


@pytest.mark.parametrize("environ,url", [
    ({}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http://collector:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/x"}, "http://b/x"),
])
def test_the_collector_comes_from_the_standard_variables(environ, url):
    settings = Settings.from_env(environ)
    assert settings.otel_traces_url == url and settings.otel_capture_content is False
    assert Settings.from_env({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}).otel_capture_content


def test_the_otlp_exporter_posts_to_a_collector():
    received = []
    collector = FastAPI()

    @collector.post("/v1/traces")
    async def traces(request: Request):
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        received.append((request.headers.get("content-type"), message))
        return Response(status_code=200)

    with serve_in_thread(collector) as url:
        spans = telemetry.RunSpans.over_otlp(f"{url}/v1/traces")
        spans.export("run-3", sample_trace())
        assert spans.provider.force_flush(10_000)
        spans.provider.shutdown()
    assert received and received[0][0] == "application/x-protobuf"
    exported = [span for _, message in received for rs in message.resource_spans for ss in rs.scope_spans
                for span in ss.spans]
    names = sorted(span.name for span in exported)
    assert names == ["chat tiny", "execute_tool sandbox", "execute_tool sandbox", "invoke_agent pal"]
    service = {a.key: a.value.string_value for a in received[0][1].resource_spans[0].resource.attributes}
    assert service["service.name"] == "reason-studio"
