"""OpenAI API request bodies and their mapping onto prompts and SamplingParams (response shapes: choices.py).

Follows OpenAI's Completions and Chat Completions references, plus the extras llama.cpp and vLLM accept:
top_k, min_p, typical_p, repetition_penalty and the output constraints of structured.py. A trailing
assistant message is a prefix the model continues, as in serving/langchain.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..chat_template import ChatTemplate
from ..sampling import SamplingParams
from ..sampling_params import Constraint
from ..tokenizer import Tokenizer
from .structured import request_constraint
from .tools import ToolPlan, template_messages, tool_plan


class APIError(Exception):
    """An error the client gets as `{"error": {"message", "type", "param", "code"}}` with `status`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers


class StreamOptions(BaseModel):
    include_usage: bool = False


MAX_N = 128  # as OpenAI: each sample is a sequence in the scheduler


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    top_k: int = 0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    draft_tokens: int = 0  # ours: prompt-lookup speculative decoding, as SamplingParams takes it
    deterministic: bool = False  # ours: batch-invariant kernels (the same tokens whatever the batch)
    structured_outputs: dict | None = None  # vLLM's; the fields below are its older names and llama.cpp's
    guided_json: dict | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    grammar: str | None = None
    json_schema: dict | str | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data):
        """Clients send `null` for "not set" (LangChain does): treat it as the field's default."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class CompletionRequest(_Request):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str | dict = "{}"  # JSON text, as OpenAI sends it (an object is accepted too)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool result: the call it answers
    name: str | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    reasoning_format: Literal["deepseek", "none"] = "deepseek"  # llama.cpp's: "none" leaves <think> in content
    max_reasoning_tokens: int | None = None  # close a reasoning model's thinking after this many tokens
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None  # accepted; an answer makes one call (tools.py)
    response_format: dict | None = None


def completion_prompts(request: CompletionRequest, tokenizer: Tokenizer, vocab_size: int) -> list[list[int]]:
    """The request's prompts as token ids (a string, a list of strings, token ids or lists of them)."""
    if request.echo:
        raise APIError(400, "echo is not supported", param="echo")
    if request.suffix:
        raise APIError(400, "suffix is not supported", param="suffix")
    if request.best_of not in (None, request.n):
        raise APIError(400, "best_of is not supported (leave it unset or equal to n)", param="best_of")
    prompt = request.prompt
    if isinstance(prompt, str):
        prompts = [tokenizer.encode(prompt)]
    elif prompt and all(isinstance(t, int) for t in prompt):
        prompts = [list(prompt)]
    else:
        prompts = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompt]
    if not prompts:
        raise APIError(400, "prompt is empty", param="prompt")
    return prompts


def prompt_count(request: CompletionRequest) -> int:
    """How many prompts (so how many queued requests) the request makes, known before tokenizing."""
    prompt = request.prompt
    if isinstance(prompt, str) or (prompt and all(isinstance(t, int) for t in prompt)):
        return 1
    return len(prompt)


def prompt_texts(request: CompletionRequest) -> list[str]:
    """The request's prompts that are text (the others are token ids already)."""
    prompt = request.prompt
    return [prompt] if isinstance(prompt, str) else [p for p in prompt if isinstance(p, str)]


@dataclass(frozen=True)
class OutputRules:
    """What a reply must match: the constraint, the request field it comes from, the tool plan behind it."""
    constraint: Constraint | None = None
    field: str | None = None
    plan: ToolPlan | None = None


def output_rules(request: _Request) -> OutputRules:
    """The request's one output constraint: tools, response_format or one of the extras of structured.py."""
    constraint, field = request_constraint(request)
    plan = tool_plan(request.tools, request.tool_choice) if isinstance(request, ChatRequest) else None
    if plan and constraint:
        raise APIError(400, f"tools and {field} are two output constraints; a request takes one (or set "
                            "tool_choice 'none')", param=field)
    return OutputRules(plan.constraint(), "tools", plan) if plan else OutputRules(constraint, field)


def chat_prompt(request: ChatRequest, template: ChatTemplate, plan: ToolPlan | None = None) -> str:
    """The prompt text: messages (and tools) through the model's chat template; a trailing assistant message is continued."""
    if not request.messages:
        raise APIError(400, "messages must not be empty", param="messages")
    messages = [_message(m) for m in request.messages]
    prefix = ""
    if len(messages) > 1 and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
        prefix = messages.pop()["content"]
    shown, tools = template_messages(messages, plan, template.takes_tools, template.source)
    return template.render(shown, add_generation_prompt=True, tools=tools) + prefix


def _message(message: ChatMessage) -> dict:
    """An OpenAI-shaped message dict (developer is system; tool call arguments as JSON text)."""
    out = {"role": "system" if message.role == "developer" else message.role, "content": _text(message.content)}
    if message.tool_calls:
        out["tool_calls"] = [_call(c) for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def _call(call: ToolCall) -> dict:
    arguments = call.function.arguments
    return {"id": call.id, "type": "function", "function": {
        "name": call.function.name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}}


def _text(content: str | list[TextPart] | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content)
    return content or ""


def sampling_params(request: _Request, chat: bool, prompt_tokens: int, context: int, vocab_size: int,
                    constraint: Constraint | None = None) -> SamplingParams:
    """SamplingParams for one (already checked) prompt of the request; raises APIError or ParamError naming the field."""
    room = context - prompt_tokens
    max_tokens = (request.max_completion_tokens or request.max_tokens) if chat else request.max_tokens
    max_tokens = room if max_tokens is None else max_tokens
    if max_tokens > room:
        raise APIError(400, f"max_tokens {max_tokens} + {prompt_tokens} prompt tokens exceed the model's context of "
                            f"{context}; ask for at most {room}", param="max_tokens", code="context_length_exceeded")
    if chat:
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
    else:
        logprobs = request.logprobs
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    return SamplingParams(
        temperature=request.temperature, top_k=request.top_k, top_p=request.top_p, min_p=request.min_p,
        typical_p=request.typical_p, repetition_penalty=request.repetition_penalty,
        frequency_penalty=request.frequency_penalty, presence_penalty=request.presence_penalty,
        logit_bias=_logit_bias(request.logit_bias), seed=request.seed, max_tokens=max_tokens, stop=stop,
        n=request.n, logprobs=logprobs, max_reasoning_tokens=getattr(request, "max_reasoning_tokens", None),
        constraint=constraint, draft_tokens=request.draft_tokens, deterministic=request.deterministic,
    ).validate(vocab_size)


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float]:
    out = {}
    for key, value in (bias or {}).items():
        if not key.strip().isdigit():
            raise APIError(400, f"logit_bias keys must be token ids, got {key!r}", param="logit_bias")
        if not -100 <= value <= 100:
            raise APIError(400, f"logit_bias values must be in [-100, 100], got {value}", param="logit_bias")
        out[int(key)] = value
    return out
