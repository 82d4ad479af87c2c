"""Strategies' output constraints on every backend, with a random-weight model: the worst case for format.

Through the engine (in-process and over its HTTP server) every constrained ReAct step parses,
numbered for its step, every CoT reply ends with its answer line and every PAL program with its
return line. A server that follows no constraint field, or refuses one, and llama-cpp-python
(no Lark) run the call free, and the trace says so.
"""
from dataclasses import replace

import pytest

from app.backends import BackendChoice, chat_model, engine_chat_model
from app.constraints import LLGUIDANCE_MARK, request_fields
from engine import load_model
from engine.serving.server import create_app
from prompts import cot, pal, react
from prompts.template import load_shipped
from prompts.trace import RunInfo
from tests.live_server import serve_in_thread

from .fake_openai import MODEL, fake_openai_server

INFO = RunInfo(model_id="tiny", backend="test")
HOT = [(1.0, 1), (1.0, 2), (0.0, None)]  # (temperature, seed): sampling from random weights, and greedy


class Wiki:
    """Any page exists: the loop keeps going, step after step."""

    def search(self, entity: str) -> str:
        return f"{entity} is a page about {entity}."

    def lookup(self, keyword: str) -> str:
        return f"(Result 1 / 1) {keyword} appears here."


@pytest.fixture(scope="module")
def engine(tiny_model):
    model = load_model(tiny_model, device="cpu")
    yield model
    model.close()


def assert_steps_parse(trace, steps: int) -> None:
    calls = [s for s in trace.steps if s.kind == "llm"]
    assert trace.counters["bad_calls"] == 0 and not any(s.kind == "parse_error" for s in trace.steps)
    assert len(calls) == steps or trace.answer is not None
    for i, step in enumerate(calls, start=1):
        assert step.name == f"step {i}" and step.meta["constraint"] == "lark" and "constraint_dropped" not in step.meta
        assert f"\nAction {i}: " in step.output, step.output  # numbered for the step it is
        assert react.parse_step(step.output)[1] in ("Search", "Lookup", "Finish")


@pytest.mark.parametrize("temperature, seed", HOT)
def test_constrained_react_steps_always_parse_on_the_engine(engine, temperature, seed):
    model, info = engine_chat_model(engine, {"temperature": temperature, "seed": seed})
    trace = react.run("Where was Ilse Varga born?", model, load_shipped("react"), Wiki(), info, max_steps=3)
    assert_steps_parse(trace, 3)


def test_free_react_on_the_same_model_does_not_parse(engine):
    """What the grammar prevents: the same random model, free, fails the format."""
    model, info = engine_chat_model(engine, {"temperature": 1.0, "seed": 1})
    free = load_shipped("react_free")
    free = replace(free, extra={**free.extra, "step_max_tokens": 24})  # a short ramble fails as well as a long one
    trace = react.run("Where was Ilse Varga born?", model, free, Wiki(), info, max_steps=1)
    assert trace.counters["bad_calls"] > 0


@pytest.mark.parametrize("temperature, seed", [HOT[0], HOT[-1]])
def test_constrained_cot_and_pal_end_with_their_answer_and_return_lines(engine, temperature, seed):
    model, info = engine_chat_model(engine, {"temperature": temperature, "seed": seed, "max_tokens": 512})
    reasoning = cot.run("What is 2 + 3?", model, load_shipped("cot"), info).steps[0]
    assert "The answer is " in reasoning.output and reasoning.meta["finish_reason"] == "stop", reasoning.output
    assert cot.extract_answer(reasoning.output) is not None
    trace = pal.run("What is 2 + 3?", model, load_shipped("pal"), info, fix_errors=False)
    program = [s for s in trace.steps if s.kind == "tool"][0].input
    assert program.startswith("def solution():\n    ")
    assert program.rstrip("\n").split("\n")[-1].startswith("    return "), program


def test_the_same_constraint_goes_to_our_server_as_structured_outputs(engine):
    with serve_in_thread(create_app(engine, model_name="tiny")) as url:
        model, info = chat_model(BackendChoice("openai", "tiny", base_url=f"{url}/v1",
                                               sampling={"temperature": 1.0, "seed": 3}))
        trace = react.run("Where was Ilse Varga born?", model, load_shipped("react"), Wiki(), info, max_steps=2)
        assert model.dialect() == "structured_outputs"
        assert_steps_parse(trace, 2)
        refused = cot.run("?", model.bind(max_tokens=8), load_shipped("cot_free"), info)  # free: no probe, no drop
        assert "constraint" not in refused.steps[0].meta
        broken = model.invoke("Hi", constraint={"kind": "lark", "spec": "start: @@@"}, max_tokens=4)
    assert "refused the lark constraint" in broken.response_metadata["constraint_dropped"]


def test_a_server_without_constraints_runs_free_and_the_trace_says_so():
    with fake_openai_server(reply="I think 4. The answer is 4.") as server:
        model, info = chat_model(BackendChoice("openai", MODEL, base_url=server.base_url))
        trace = cot.run("2 + 2?", model, load_shipped("cot"), info)
        again = cot.run("2 + 2?", model, load_shipped("cot"), info)
    step = trace.steps[0]
    assert trace.answer == "4" and step.meta["constraint"] == "lark"
    assert "follows none of: structured_outputs, guided, llama.cpp" in step.meta["constraint_dropped"]
    assert trace.counters["unconstrained_calls"] == 1 and again.counters["unconstrained_calls"] == 1
    probes = [r for r in server.requests if r["path"] == "/v1/completions"]
    chats = [r["body"] for r in server.requests if r["path"] == "/v1/chat/completions"]
    assert len(probes) == 3  # once per chat model, each dialect tried
    assert len(chats) == 2 and not any(k in body for body in chats for k in ("structured_outputs", "grammar"))


def test_llama_cpp_takes_gbnf_and_says_when_it_cannot_take_lark(tiny_model):
    model, info = chat_model(BackendChoice("llamacpp", str(tiny_model), sampling={"max_tokens": 6}))
    reply = model.invoke("Yes or no?", constraint={"kind": "gbnf", "spec": 'root ::= "yes" | "no"'})
    assert reply.content in ("yes", "no") and "constraint_dropped" not in reply.response_metadata
    trace = cot.run("2 + 2?", model, load_shipped("cot"), info)
    assert "not lark" in trace.steps[0].meta["constraint_dropped"] and trace.counters["unconstrained_calls"] == 1


@pytest.mark.parametrize("dialect, constraint, fields", [
    ("structured_outputs", {"kind": "lark", "spec": "start: x"}, {"structured_outputs": {"grammar": "start: x"}}),
    ("structured_outputs", {"kind": "json_schema", "spec": '{"type": "object"}'},
     {"structured_outputs": {"json": {"type": "object"}}}),
    ("guided", {"kind": "choice", "spec": ["a", "b"]}, {"guided_choice": ["a", "b"]}),
    ("llama.cpp", {"kind": "gbnf", "spec": 'root ::= "a"'}, {"grammar": 'root ::= "a"'}),
    ("llama.cpp", {"kind": "lark", "spec": "start: x"}, {"grammar": LLGUIDANCE_MARK + "start: x"}),
    ("llama.cpp", {"kind": "regex", "spec": "a+"}, None),
])
def test_each_server_dialect_carries_a_constraint_in_its_own_field(dialect, constraint, fields):
    assert request_fields(dialect, constraint) == fields
