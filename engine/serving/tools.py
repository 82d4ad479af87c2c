"""OpenAI function tools: reading `tools` and `tool_choice`, offering the tools to the model and the
grammar that makes its answer a well-formed call (OpenAI Chat Completions "function calling").

The tools reach the model through the chat template when it reads a `tools` variable (HF's
convention); otherwise through FALLBACK, a block added to the system message. `required` and a named
function constrain the whole answer to one call; `auto` lets the model write prose or, at any point,
open `<tool_call>`, after which the call is constrained (a Lark grammar: text without the tag | text,
tag, call). One call per answer (`parallel_tool_calls` is accepted; the model calls again next turn).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..completion import ParamError
from ..grammar import JSON_OPTIONS
from ..sampling_params import Constraint
from .tool_calls import CLOSE, TAG, call_block

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}
FALLBACK = """# Tools

You may call one of these functions:
{functions}

To call a function, reply with only this, the arguments as a JSON object that fits its parameters:
<tool_call>
{{"name": "<function name>", "arguments": {{...}}}}
</tool_call>
{when}"""
WHEN = {"auto": "Otherwise reply in plain text.", "required": "Reply with a function call."}
FORMAT_NOTE = FALLBACK[FALLBACK.index("To call"):]  # for templates that list the tools in their own words


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict

    def spec(self) -> dict:
        """The OpenAI shape chat templates read."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolPlan:
    """The tools offered, the ones the answer may call, and whether it must ("required") or may ("auto")."""
    tools: tuple[Tool, ...]
    callable: tuple[Tool, ...]
    mode: str

    def constraint(self) -> Constraint:
        if len(self.callable) == 1:
            schema = _call_schema(self.callable[0], "#/properties/arguments")
        else:
            schema = {"anyOf": [_call_schema(t, f"#/anyOf/{i}/properties/arguments") for i, t in enumerate(self.callable)]}
        schema["x-guidance"] = JSON_OPTIONS
        rules = f'call: "\\n" %json {json.dumps(schema)} "{_lark(CLOSE)}"\n'
        if self.mode == "required":
            return Constraint("lark", f'start: "{TAG}" call\n{rules}')
        # prose may not contain the tag; a lazy lexeme ends at its first occurrence, and the call follows
        return Constraint("lark", f"start: TEXT | head call\nTEXT: /(?s:.*)/ & ~/(?s:.*){TAG}(?s:.*)/\n"
                                  f"head[lazy]: /(?s:.*){TAG}/\n{rules}")


def tool_plan(tools: list | None, tool_choice, field: str = "tools") -> ToolPlan | None:
    """The plan for a request's tools and tool_choice; None when no call may be made. ParamError names a bad field."""
    offered = tuple(_tool(spec, f"{field}.{i}") for i, spec in enumerate(tools or []))
    if len({t.name for t in offered}) < len(offered):
        raise ParamError("tools: two functions have the same name", field)
    choice = tool_choice if tool_choice is not None else ("auto" if offered else "none")
    if choice == "none":
        return None
    if not offered:
        raise ParamError(f"tool_choice {choice!r} needs tools", "tool_choice")
    if choice in ("auto", "required"):
        return ToolPlan(offered, offered, choice)
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    named = [t for t in offered if t.name == name]
    if not named:
        raise ParamError("tool_choice must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": "
                         f"{{\"name\": ...}}}} naming one of the tools; got {tool_choice!r}", "tool_choice")
    return ToolPlan(offered, tuple(named), "required")


def _tool(spec, where: str) -> Tool:
    function = spec.get("function") if isinstance(spec, dict) and spec.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not NAME.fullmatch(str(function.get("name", ""))):
        raise ParamError(f"{where} must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}} with a name of "
                         "up to 64 letters, digits, _ or -", "tools")
    parameters = function.get("parameters") or NO_PARAMETERS
    if not isinstance(parameters, dict):
        raise ParamError(f"{where}.function.parameters must be a JSON schema object", "tools")
    return Tool(function["name"], str(function.get("description") or ""), parameters)


def _call_schema(tool: Tool, at: str) -> dict:
    """{"name": <the name>, "arguments": <the parameters>}, with the parameters' local $refs pointing to `at`."""
    return {"type": "object", "properties": {"name": {"const": tool.name}, "arguments": _rebased(tool.parameters, at)},
            "required": ["name", "arguments"], "additionalProperties": False}


def _rebased(node, at: str):
    if isinstance(node, dict):
        return {k: at + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebased(v, at)
                for k, v in node.items()}
    return [_rebased(v, at) for v in node] if isinstance(node, list) else node


def _lark(text: str) -> str:
    return json.dumps(text)[1:-1]


def template_messages(messages: list[dict], plan: ToolPlan | None, takes_tools: bool,
                      template_text: str) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) for the chat template: its own tools support, or FALLBACK in the system message.

    `messages` are OpenAI-shaped: assistant `tool_calls` (arguments as JSON text) and `tool` results.
    """
    if takes_tools:
        shown = [_native(m) for m in messages]
        if plan and TAG not in template_text:  # the template's own call format is not the one we enforce
            shown = _with_system(shown, FORMAT_NOTE.format(when=WHEN[plan.mode]))
        return shown, [t.spec() for t in plan.tools] if plan else None
    shown = [_plain(m) for m in messages]
    if plan:
        functions = "\n".join(json.dumps(t.spec()["function"], ensure_ascii=False) for t in plan.tools)
        shown = _with_system(shown, FALLBACK.format(functions=functions, when=WHEN[plan.mode]))
    return shown, None


def _native(message: dict) -> dict:
    """HF's shape: arguments as an object, content never missing."""
    out = {**message, "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = [{**c, "function": {**c["function"], "arguments": _object(c["function"]["arguments"])}}
                             for c in message["tool_calls"]]
    return out


def _plain(message: dict) -> dict:
    """For templates that know only system/user/assistant: calls written out, results as a user turn."""
    content = message.get("content") or ""
    if message["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
    calls = [call_block(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
    return {"role": message["role"], "content": "\n".join([content, *calls]) if content else "\n".join(calls)}


def _object(arguments):
    try:
        return json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        return arguments  # shown as sent


def _with_system(messages: list[dict], block: str) -> list[dict]:
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{block}"}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]
