"""Structured output and tool calls through the OpenAI-compatible server, driven by the official `openai` client.

The model has random weights and samples at temperature 1.0, the worst case for format: every check
below holds only because the engine constrains the output. Schemas bound their strings and lists
(maxLength, maxItems) so an answer ends within max_tokens.
"""
import json
import re
from typing import Annotated

import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from engine import load_model
from engine.serving.server import create_app
from tests.live_server import serve_in_thread

from .tiny_gguf import TinyShape, write_tiny_llama

KEY = "test-key"
HOT = {"model": "tiny", "temperature": 1.0, "max_tokens": 300}
SEEDS = (1, 2, 3)
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=10)
    age: int = Field(ge=0, le=120)
    tags: list[Annotated[str, Field(max_length=6)]] = Field(max_length=3)  # list length: maxItems


class Weather(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str = Field(max_length=8)
    days: int = Field(ge=1, le=7)


class Add(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int = Field(ge=0, le=99)
    b: int = Field(ge=0, le=99)


def function(name: str, model: type[BaseModel]) -> dict:
    return {"type": "function", "function": {"name": name, "description": f"{name} tool",
                                             "parameters": model.model_json_schema()}}


TOOLS = [function("get_weather", Weather), function("add", Add)]
ARGUMENTS = {"get_weather": Weather, "add": Add}


@pytest.fixture(scope="module")
def engine(tmp_path_factory, spm_vocab):
    path = write_tiny_llama(tmp_path_factory.mktemp("structured") / "tiny.gguf", spm_vocab, "Q8_0",
                            shape=TinyShape(context=2048))
    model = load_model(path, device="cpu", dtype="float32")
    yield model
    model.close()


@pytest.fixture(scope="module")
def client(engine):
    with serve_in_thread(create_app(engine, api_key=KEY, model_name="tiny")) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)


def person_format() -> dict:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": Person.model_json_schema(), "strict": True}}


def test_json_schema_replies_are_valid_every_time(client):
    for seed in SEEDS:
        reply = client.chat.completions.create(messages=ASK, response_format=person_format(), seed=seed, n=2, **HOT)
        for choice in reply.choices:
            assert choice.finish_reason == "stop", choice.message.content
            Person.model_validate_json(choice.message.content)


def test_parse_returns_the_pydantic_model(client):
    reply = client.chat.completions.parse(messages=ASK, response_format=Person, seed=5, **HOT)
    parsed = reply.choices[0].message.parsed
    assert isinstance(parsed, Person) and len(parsed.name) <= 10 and 0 <= parsed.age <= 120


def test_json_object_is_an_object(client, engine):
    # any object may nest without end: favour closing tokens so it finishes, the grammar still decides what is valid
    closing = {str(t): 20 for t in engine.tokenizer.encode('"}', add_bos=False)}
    reply = client.chat.completions.create(messages=ASK, response_format={"type": "json_object"}, seed=1,
                                           logit_bias=closing, **HOT)
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content), dict)


REGEX = r"(yes|no), [a-z]{2,6}[.!]"
EXTRAS = [
    ({"structured_outputs": {"choice": ["red", "green", "light blue"]}}, lambda t: t in ("red", "green", "light blue")),
    ({"structured_outputs": {"regex": REGEX}}, lambda t: re.fullmatch(REGEX, t)),
    ({"structured_outputs": {"json": Weather.model_json_schema()}}, lambda t: Weather.model_validate_json(t)),
    ({"structured_outputs": {"grammar": 'start: "x=" /[0-9]{1,3}/'}}, lambda t: re.fullmatch(r"x=[0-9]{1,3}", t)),
    ({"guided_choice": ["up", "down"]}, lambda t: t in ("up", "down")),
    ({"guided_regex": REGEX}, lambda t: re.fullmatch(REGEX, t)),
    ({"grammar": 'root ::= "The answer is " [0-9]+ "."'}, lambda t: re.fullmatch(r"The answer is [0-9]+\.", t)),
]


@pytest.mark.parametrize("extra,matches", EXTRAS, ids=lambda v: next(iter(v)) if isinstance(v, dict) else "")
def test_vllm_and_llama_cpp_constraints_match(client, extra, matches):
    for seed in SEEDS:
        reply = client.chat.completions.create(messages=ASK, seed=seed, extra_body=extra, **HOT).choices[0]
        assert reply.finish_reason == "stop" and matches(reply.message.content), reply.message.content


def test_completions_take_constraints_too(client):
    reply = client.completions.create(model="tiny", prompt="Answer:", temperature=1.0, max_tokens=40, seed=3, n=3,
                                      extra_body={"structured_outputs": {"regex": REGEX}})
    assert all(re.fullmatch(REGEX, c.text) for c in reply.choices), [c.text for c in reply.choices]


def check_call(call) -> None:
    assert call.type == "function" and call.id.startswith("call_")
    ARGUMENTS[call.function.name].model_validate_json(call.function.arguments)


def test_required_tool_choice_gives_a_valid_call(client):
    for seed in SEEDS:
        reply = client.chat.completions.create(messages=ASK, tools=TOOLS, tool_choice="required", seed=seed, **HOT)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert len(choice.message.tool_calls) == 1
        check_call(choice.message.tool_calls[0])


def test_a_named_function_is_the_one_called(client):
    for name in ("add", "get_weather"):
        choice = {"type": "function", "function": {"name": name}}
        reply = client.chat.completions.create(messages=ASK, tools=TOOLS, tool_choice=choice, seed=4, **HOT)
        call = reply.choices[0].message.tool_calls[0]
        assert call.function.name == name
        check_call(call)


def test_parse_reads_a_strict_function_tool(client):
    tool = openai.pydantic_function_tool(Weather, name="get_weather")
    reply = client.chat.completions.parse(messages=ASK, tools=[tool], tool_choice="required", seed=2, **HOT)
    assert isinstance(reply.choices[0].message.tool_calls[0].function.parsed_arguments, Weather)


def test_streamed_tool_call_reassembles_to_the_same_call(client):
    args = dict(messages=ASK, tools=TOOLS, tool_choice="required", seed=6, **HOT)
    whole = client.chat.completions.create(**args).choices[0].message.tool_calls[0]
    chunks = list(client.chat.completions.create(stream=True, **args))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == whole.function.name
    assert all(d.index == 0 and d.id is None and d.function.name is None for d in deltas[1:])
    assert "".join(d.function.arguments or "" for d in deltas) == whole.function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_auto_gives_text_or_a_valid_call(client):
    for seed in SEEDS:
        choice = client.chat.completions.create(messages=ASK, tools=TOOLS, seed=seed, **{**HOT, "max_tokens": 60}).choices[0]
        if choice.message.tool_calls:  # the random model rarely opens a call: when it does, it is whole
            assert choice.finish_reason == "tool_calls"
            check_call(choice.message.tool_calls[0])
        else:  # prose, or a call that max_tokens cut short
            assert "<tool_call>" not in choice.message.content or choice.finish_reason == "length"


def test_a_tool_result_goes_back_into_the_prompt(client, engine):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                             "arguments": '{"city": "Paris", "days": 1}'}}
    messages = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "22 C and sunny"}]
    reply = client.chat.completions.create(messages=messages, tools=TOOLS, tool_choice="none", max_tokens=5,
                                           model="tiny")
    text = engine.chat_template.render([
        *ASK, {"role": "assistant", "content": '<tool_call>\n{"name": "get_weather", "arguments": '
                                                '{"city": "Paris", "days": 1}}\n</tool_call>'},
        {"role": "user", "content": "<tool_response>\n22 C and sunny\n</tool_response>"}])
    assert reply.usage.prompt_tokens == len(engine.tokenizer.encode(text))


def test_the_clients_own_message_objects_go_back(client):
    first = client.chat.completions.create(messages=ASK, tools=TOOLS, tool_choice="required", seed=1, **HOT)
    call = first.choices[0].message.tool_calls[0]
    messages = [*ASK, first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "22 C"}]
    followed = client.chat.completions.create(messages=messages, tools=TOOLS, tool_choice="required", seed=2, **HOT)
    check_call(followed.choices[0].message.tool_calls[0])


BAD = [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"structured_outputs": {"regex": "(unclosed"}}, "structured_outputs"),
    ({"structured_outputs": {"regex": "a", "choice": ["b"]}}, "structured_outputs"),
    ({"grammar": "root ::= ("}, "grammar"),
    ({"guided_json": "{not json"}, "guided_json"),
    ({"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "grammar"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": [function("bad", Add) | {"function": {"name": "bad", "parameters": {"type": "nonsense"}}}],
      "tool_choice": "required"}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
]


@pytest.mark.parametrize("extra,param", BAD)
def test_bad_constraints_are_400_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(messages=ASK, model="tiny", max_tokens=4, extra_body=extra)
    assert caught.value.status_code == 400 and caught.value.body["param"] == param, caught.value.body
    assert client.chat.completions.create(messages=ASK, model="tiny", max_tokens=1).choices[0].finish_reason
