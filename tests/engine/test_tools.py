"""Tool calling pieces without a server: reading tools, the prompt (the template's own tools support or
the fallback block), the call grammar of `auto` and `required`, and the streamed-call parser."""
import json

import pytest

from engine import ParamError, load_model
from engine.chat_template import ChatTemplate
from engine.serving.openai_schema import ChatRequest, chat_prompt
from engine.serving.tool_calls import ToolCallStream, tool_call_message
from engine.serving.tools import FALLBACK, tool_plan

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string", "maxLength": 8}},
                                                "required": ["city"], "additionalProperties": False}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
HISTORY = [{"role": "user", "content": "Weather in Paris?"},
           {"role": "assistant", "content": None, "tool_calls": [
               {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
           {"role": "tool", "tool_call_id": "call_1", "content": "22 C"}]
# the shape of Qwen2.5's template: tools listed in the system turn, calls in <tool_call> tags, results as user turns
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "</tools>\nCall a function inside <tool_call></tool_call> tags.<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{% for call in message.tool_calls %}<tool_call>\n{\"name\": \"{{ call.function.name }}\", \"arguments\": "
    "{{ call.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response>"
    "<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def prompt(template: ChatTemplate, messages=HISTORY, choice="auto") -> str:
    request = ChatRequest(model="m", messages=messages, tools=[WEATHER], tool_choice=choice)
    return chat_prompt(request, template, tool_plan(request.tools, request.tool_choice))


def test_a_template_that_reads_tools_gets_them_and_the_history_in_its_own_shape():
    template = ChatTemplate(TOOLS_TEMPLATE)
    assert template.takes_tools and not ChatTemplate(None).takes_tools
    text = prompt(template)
    assert json.dumps(WEATHER, ensure_ascii=False) in text  # the template's own tools block
    assert CALL in text  # arguments reached the template as an object (HF's convention)
    assert "<tool_response>\n22 C\n</tool_response>" in text and "# Tools\n\nYou may call" not in text


def test_a_template_with_tools_but_another_call_format_is_told_ours():
    template = ChatTemplate(TOOLS_TEMPLATE.replace("tool_call>", "function>"))
    assert "To call a function, reply with only this" in prompt(template, HISTORY[:1])


def test_a_template_without_tools_gets_the_fallback_block():
    text = prompt(ChatTemplate(None), choice="required")  # the LLaMA-2 [INST] template
    block = FALLBACK.format(functions=json.dumps(WEATHER["function"]), when="Reply with a function call.")
    assert f"<<SYS>>\n{block}\n<</SYS>>" in text
    assert f" {CALL} " in text and "[INST] <tool_response>\n22 C\n</tool_response> [/INST]" in text
    assert "tool_call" not in prompt(ChatTemplate(None), HISTORY[:1], choice="none")


@pytest.fixture(scope="module")
def engine(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("Q8_0"), device="cpu", dtype="float32")
    yield model
    model.close()


def accepts(engine, constraint, text: str) -> bool:
    matcher = engine.constraints.matcher(constraint)
    return matcher.consume_tokens(engine.tokenizer.encode_continuation(text)) and matcher.is_accepting()


def test_auto_allows_prose_or_prose_then_a_call_and_constrains_the_call(engine):
    auto = tool_plan([WEATHER], "auto").constraint()
    for good in ("It is sunny.", "", "a <tool text", CALL, f"Let me look. {CALL}"):
        assert accepts(engine, auto, good), good
    for bad in ("<tool_call> free text", CALL.replace("Paris", "Paris, France"), f"{CALL} and more",
                CALL.replace("get_weather", "get_time")):
        assert not accepts(engine, auto, bad), bad


def test_required_allows_only_a_call(engine):
    required = tool_plan([WEATHER], "required").constraint()
    assert accepts(engine, required, CALL) and not accepts(engine, required, "It is sunny.")
    assert not accepts(engine, required, f"Sure. {CALL}")


def test_tool_choice_and_tools_are_checked():
    with pytest.raises(ParamError, match="needs tools") as caught:
        tool_plan(None, "required")
    assert caught.value.param == "tool_choice"
    assert tool_plan([WEATHER], "none") is None and tool_plan(None, None) is None
    with pytest.raises(ParamError, match="same name"):
        tool_plan([WEATHER, WEATHER], "auto")
    named = tool_plan([WEATHER, {"type": "function", "function": {"name": "noop"}}],
                      {"type": "function", "function": {"name": "noop"}})
    assert [t.name for t in named.callable] == ["noop"] and len(named.tools) == 2


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_the_call_parser_gives_the_same_call_in_any_pieces(size):
    text = f"Let me look. {CALL}"
    stream = ToolCallStream()
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    out = [stream.feed(p, final=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    assert "".join(content for content, _ in out) == "Let me look. "
    deltas = [d for _, ds in out for d in ds]
    assert deltas[0]["function"]["name"] == "get_weather" and deltas[0]["id"].startswith("call_")
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"city": "Paris"}'
    message = tool_call_message(stream)
    assert message["content"] == "Let me look. " and message["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'


def test_prose_that_only_looks_like_the_tag_is_content_and_a_cut_call_is_text():
    stream = ToolCallStream()
    assert stream.feed("a <tool") == ("a ", []) and stream.feed("box", final=True) == ("<toolbox", [])
    cut = ToolCallStream()
    cut.feed(CALL[:30], final=True)
    assert tool_call_message(cut) == {"role": "assistant", "content": CALL[:30]}
