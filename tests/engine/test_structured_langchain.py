"""EngineChatModel's structured output and tool calls, and LangGraph's prebuilt ReAct agent on the engine.

A random-weight model sampling at temperature 1.0 cannot choose well, so the tests fix the choice
(tool_choice) and check what the engine guarantees: schema-valid objects and calls, tool results
back in the prompt, and the agent's loop running to its end.
"""
from typing import Annotated, Literal, TypedDict

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, ConfigDict, Field

from engine import load_model
from engine.serving.langchain import EngineChatModel

from .tiny_gguf import TinyShape, write_tiny_llama

ASK = [HumanMessage("What is the weather in Paris?")]


class Person(BaseModel):
    """A person."""
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=120)


class Movie(TypedDict):
    """A movie (LangChain's TypedDict convention: Annotated[type, default, description]; bounded types only)."""
    genre: Annotated[Literal["drama", "comedy", "western"], ..., "its genre"]
    liked: Annotated[bool, ..., "whether it was liked"]


class Weather(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str = Field(max_length=8)
    days: int = Field(ge=1, le=7)


@tool(args_schema=Weather)
def get_weather(city: str, days: int) -> str:
    """The weather forecast for a city."""
    return f"sunny in {city} for {days} days"


@pytest.fixture(scope="module")
def engine(tmp_path_factory, spm_vocab):
    path = write_tiny_llama(tmp_path_factory.mktemp("lc-structured") / "tiny.gguf", spm_vocab, "Q8_0",
                            shape=TinyShape(context=2048))
    engine = load_model(path, device="cpu", dtype="float32", kv_cache_mb=64)
    yield engine
    engine.close()


def hot(engine, **fields) -> EngineChatModel:
    return EngineChatModel(engine=engine, **{"temperature": 1.0, "max_tokens": 300, **fields})


def test_with_structured_output_returns_the_pydantic_model_every_time(engine):
    for seed in (1, 2, 3):
        person = hot(engine, seed=seed).with_structured_output(Person).invoke(ASK)
        assert isinstance(person, Person) and len(person.name) <= 10


def test_with_structured_output_takes_a_typeddict_a_json_schema_and_json_mode(engine):
    # LangChain's schema of a TypedDict leaves it open to other keys: strict closes it
    movie = hot(engine, seed=1).with_structured_output(Movie, strict=True).invoke(ASK)
    assert set(movie) == {"genre", "liked"} and movie["genre"] in ("drama", "comedy", "western")
    schema = {"title": "answer", "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    assert set(hot(engine, seed=2).with_structured_output(schema).invoke(ASK)) == {"ok"}
    closing = {t: 20.0 for t in engine.tokenizer.encode('"}', add_bos=False)}  # any object: help it finish
    assert isinstance(hot(engine, seed=3, logit_bias=closing).with_structured_output(
        Person, method="json_mode", include_raw=True).invoke(ASK)["raw"], AIMessage)


def test_include_raw_and_function_calling(engine):
    both = hot(engine, seed=4).with_structured_output(Person, include_raw=True).invoke(ASK)
    assert isinstance(both["parsed"], Person) and both["parsing_error"] is None
    assert Person.model_validate_json(both["raw"].content) == both["parsed"]
    called = hot(engine, seed=4).with_structured_output(Person, method="function_calling").invoke(ASK)
    assert isinstance(called, Person)


def test_bind_tools_returns_schema_valid_tool_calls(engine):
    for choice in ("required", "get_weather", "any"):
        reply = hot(engine, seed=5).bind_tools([get_weather], tool_choice=choice, strict=True).invoke(ASK)
        assert len(reply.tool_calls) == 1 and reply.tool_calls[0]["name"] == "get_weather"
        Weather.model_validate(reply.tool_calls[0]["args"])
        assert reply.response_metadata["finish_reason"] == "tool_calls" and reply.tool_calls[0]["id"]


def test_streamed_tool_calls_join_to_the_invoked_ones(engine):
    chat = hot(engine, seed=6).bind_tools([get_weather], tool_choice="required", strict=True)
    chunks = list(chat.stream(ASK))
    joined = sum(chunks[1:], chunks[0])
    invoked = chat.invoke(ASK)
    assert [(c["name"], c["args"]) for c in joined.tool_calls] == [(c["name"], c["args"]) for c in invoked.tool_calls]
    assert len([c for c in chunks if c.tool_call_chunks]) > 1  # the arguments arrived in pieces


def test_a_tool_message_is_rendered_into_the_next_prompt(engine):
    chat = hot(engine, seed=7)
    call = {"name": "get_weather", "args": {"city": "Paris", "days": 2}, "id": "call_9", "type": "tool_call"}
    history = [*ASK, AIMessage("", tool_calls=[call]), ToolMessage("sunny", tool_call_id="call_9")]
    prompt = chat.prompt_text(history)
    assert '{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}' in prompt
    assert "<tool_response>\nsunny\n</tool_response>" in prompt


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_react_agent_calls_the_tool_and_finishes(engine, monkeypatch):
    create_react_agent = pytest.importorskip("langgraph.prebuilt").create_react_agent  # dev extra

    prompts = []
    generate = engine.generate
    monkeypatch.setattr(engine, "generate", lambda p, params: prompts.extend(p) or generate(p, params))
    chat = hot(engine, seed=8)
    # the agent asks the model each turn; this one must call the tool first and answer once it has the result
    caller = chat.bind_tools([get_weather], tool_choice="get_weather", strict=True)
    answerer = chat.bind_tools([get_weather], tool_choice="none", max_tokens=12)
    agent = create_react_agent(
        lambda state, runtime: answerer if isinstance(state["messages"][-1], ToolMessage) else caller, [get_weather])
    messages = agent.invoke({"messages": ASK})["messages"]
    assert [m.type for m in messages] == ["human", "ai", "tool", "ai"]
    call = messages[1].tool_calls[0]
    args = Weather.model_validate(call["args"])
    assert messages[2].tool_call_id == call["id"] and messages[2].content == get_weather.invoke(call["args"])
    assert not messages[3].tool_calls and messages[3].content == messages[-1].content
    assert len(prompts) == 2 and f"<tool_response>\nsunny in {args.city} for {args.days} days" in prompts[1]
