"""Fuzzing the engine's untrusted inputs (hypothesis, bounded; issue 17): mutated real GGUF headers, OpenAI
request bodies, chat templates. Every generated input ends in a valid result or the one clean error its
reader promises (ModelFileError, APIError/ParamError, ChatTemplateError): never another exception or a hang."""
import json
import struct
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.chat_template import ChatTemplate, ChatTemplateError
from engine.completion import ParamError, check_prompt
from engine.gguf_file import GGUFFile, ModelFileError
from engine.loader import check_layout, model_args
from engine.serving.messages import check_messages
from engine.serving.openai_schema import (
    APIError,
    ChatRequest,
    CompletionRequest,
    chat_prompt,
    completion_prompts,
    output_rules,
    sampling_params,
)
from engine.tokenizer import Tokenizer

# A fixed budget: examples per property and time per example; no example database left in the tree.
BUDGET = settings(max_examples=150, deadline=timedelta(seconds=5), database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def header(llama2_gguf) -> bytes:
    """The real file up to the end of its tensor directory: everything the reader parses before tensor data."""
    data = llama2_gguf.read_bytes()
    name = b"output.weight"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    return data[:at + 4 + 8 * 2 + 4 + 8]


@pytest.fixture(scope="module")
def tail(llama2_gguf, header) -> bytes:
    return llama2_gguf.read_bytes()[len(header):]


INTERESTING = [0, 1, 2, 3, 7, 255, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**60, 2**63, 2**64 - 1]
mutation = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, 10**7), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.integers(0, 10**7), st.sampled_from(INTERESTING[:10])),
    st.tuples(st.just("u64"), st.integers(0, 10**7), st.sampled_from(INTERESTING)),
    st.tuples(st.just("f32"), st.integers(0, 10**7), st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 1e38])),
    st.tuples(st.just("cut"), st.integers(0, 10**7), st.just(0)),
)


def mutate(header: bytes, mutations) -> bytes:
    data = bytearray(header)
    for kind, at, value in mutations:
        if len(data) <= 16:
            break
        at = 8 + at % (len(data) - 16)  # past the magic and version, which are checked first anyway
        if kind == "byte":
            data[at] = value
        elif kind == "cut":
            del data[at:]
        else:
            packed = struct.pack({"u32": "<I", "u64": "<Q", "f32": "<f"}[kind], value)
            data[at:at + len(packed)] = packed
    return bytes(data)


@BUDGET
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_gguf_headers_are_read_or_refused_cleanly(tmp_path, header, tail, mutations):
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(mutate(header, mutations) + tail)
    start = time.perf_counter()
    try:
        gguf = GGUFFile(path)
        check_layout(gguf, model_args(gguf))  # what every value read feeds: shapes, sizes, divisions
        Tokenizer.from_gguf(gguf)
    except ModelFileError as exc:
        assert str(path) in str(exc) or "model file" in str(exc)
    assert time.perf_counter() - start < 3


# ---- OpenAI request bodies

SPECIALS = ["\ud800", "\x00", "<|im_start|>", "{{ 7 * 7 }}", "<tool_call>", "\n", ""]
text = st.one_of(st.text(max_size=30), st.sampled_from(SPECIALS))
scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True), text)
anything = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                        max_leaves=6)
role = st.one_of(st.sampled_from(["system", "developer", "user", "assistant", "tool"]), text)
call = st.fixed_dictionaries({"id": st.one_of(text, st.just("call_1")), "type": st.just("function"),
                              "function": st.fixed_dictionaries({"name": text, "arguments": st.one_of(text, anything)})})
message = st.fixed_dictionaries({"role": role}, optional={
    "content": st.one_of(st.none(), text, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}),
                                                    max_size=2), anything),
    "tool_calls": st.one_of(st.none(), st.lists(call, max_size=2)), "tool_call_id": st.one_of(text, st.just("call_1")),
    "name": text})
tool = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.one_of(text, st.just("add")), "parameters": st.one_of(anything, st.just({"type": "object"}))})})
knobs = {
    "n": st.one_of(st.integers(-2, 200), anything), "max_tokens": st.one_of(st.integers(-5, 10**6), anything),
    "temperature": st.one_of(st.floats(allow_nan=True), anything), "top_p": st.floats(-1, 2), "top_k": st.integers(-5, 10**6),
    "stop": st.one_of(text, st.lists(text, max_size=5), anything), "seed": st.one_of(st.integers(-5, 2**70), anything),
    "logit_bias": st.one_of(st.dictionaries(st.one_of(text, st.integers(0, 10**6).map(str)), st.floats(-200, 200),
                                            max_size=3), anything),
    "logprobs": anything, "top_logprobs": st.one_of(st.integers(-1, 40), anything), "stream": anything,
    "response_format": st.one_of(anything, st.sampled_from([{"type": "json_object"}, {"type": "json_schema"},
                                                            {"type": "json_schema", "json_schema": {"schema": {}}}])),
    "tools": st.one_of(st.lists(tool, max_size=2), anything), "tool_choice": st.one_of(
        st.sampled_from(["auto", "none", "required"]), anything),
    "grammar": st.one_of(text, st.just("root ::= \"a\"")), "guided_regex": text, "guided_choice": anything,
    "max_reasoning_tokens": anything, "min_p": st.floats(-1, 2), "echo": anything, "suffix": anything,
}
chat_body = st.fixed_dictionaries({"model": st.just("tiny"), "messages": st.one_of(st.lists(message, max_size=4), anything)},
                                  optional=knobs)
completion_body = st.fixed_dictionaries(
    {"model": st.just("tiny"), "prompt": st.one_of(text, st.lists(text, max_size=3), st.lists(st.integers(-5, 10**6),
                                                                                             max_size=5), anything)},
    optional=knobs)


@pytest.fixture(scope="module")
def tokenizer(llama2_gguf) -> Tokenizer:
    return Tokenizer.from_gguf(GGUFFile(llama2_gguf))


def prepare(raw: str, schema, tokenizer: Tokenizer, template: ChatTemplate) -> None:
    """What the server does with a body before generating, in its order; the clean errors are the answers."""
    try:
        request = schema.model_validate_json(raw)
    except ValidationError:
        return  # answered 400 naming the field (errors.validation_error)
    try:
        rules = output_rules(request)
        if schema is ChatRequest:
            check_messages(request.messages)
            prompts = [tokenizer.encode(chat_prompt(request, template, rules.plan))]
        else:
            prompts = completion_prompts(request, tokenizer, 400)
        for ids in prompts:
            check_prompt(ids, 4096, 400)
            sampling_params(request, schema is ChatRequest, len(ids), 4096, 400, rules.constraint)
    except (APIError, ParamError, ChatTemplateError):
        pass


@BUDGET
@given(body=chat_body)
def test_chat_bodies_end_in_a_request_or_a_clean_error(tokenizer, body):
    template = ChatTemplate("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    prepare(json.dumps(body, allow_nan=True), ChatRequest, tokenizer, template)


@BUDGET
@given(body=completion_body)
def test_completion_bodies_end_in_a_request_or_a_clean_error(tokenizer, body):
    prepare(json.dumps(body, allow_nan=True), CompletionRequest, tokenizer, ChatTemplate(None))


# ---- chat templates

fragment = st.one_of(
    st.sampled_from([
        "{{ m['content'] }}", "{{ message.role }}", "{% for m in messages %}", "{% endfor %}", "{% if loop.first %}",
        "{% endif %}", "{% set x = 'ab' * 3 %}", "{{ x | upper }}", "{{ range(5) | list }}", "{{ messages | tojson }}",
        "{{ raise_exception('no') }}", "{{ bos_token }}", "{% if add_generation_prompt %}assistant:{% endif %}",
        "{{ 'a' ~ 1 }}", "{{ messages[0]['content'][::-1] }}", "{{ (messages | length) ** 3 }}", "{{ 1 / 0 }}",
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}", "{{ f(1) }}", "{{ 'x' | center(50) }}", "{{ ''.join(['a', 'b']) }}",
        "{{ '%5d' % 3 }}", "{{ messages[9] }}", "{{ x.__class__ }}", "{% for i in range(1000) %}{% endfor %}",
    ]),
    st.integers(-10**12, 10**12).map(lambda n: f"{{{{ 'x' * {n} }}}}"),
    st.integers(0, 10**9).map(lambda n: f"{{{{ 'y' | indent({n}) }}}}"),
    st.integers(0, 10**6).map(lambda n: f"{{% for i in range({n}) %}}{{% for j in range({n}) %}}{{% endfor %}}{{% endfor %}}"),
    st.text(max_size=10),
)
chat = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": text}),
                min_size=1, max_size=3)


@BUDGET
@given(fragments=st.lists(fragment, min_size=1, max_size=6), messages=chat)
def test_chat_templates_render_or_fail_cleanly_in_bounded_time(fragments, messages):
    start = time.perf_counter()
    try:
        out = ChatTemplate("".join(fragments), timeout_s=0.3).render(messages)
        assert isinstance(out, str)
    except ChatTemplateError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000
    assert time.perf_counter() - start < 3
