"""OpenAI API shapes for the server: request bodies, their mapping onto SamplingParams, response choices.

Follows OpenAI's Completions and Chat Completions references (legacy `logprobs` for completions, the
`content` list for chat), plus the sampling extras llama.cpp and vLLM accept: top_k, min_p, typical_p,
repetition_penalty. A trailing assistant message is a prefix the model continues, as in serving/langchain.py.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..sampling import SamplingParams
from ..tokenizer import Tokenizer


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


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    reasoning_format: Literal["deepseek", "none"] = "deepseek"  # llama.cpp's: "none" leaves <think> in content
    max_reasoning_tokens: int | None = None  # close a reasoning model's thinking after this many tokens
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list | None = None
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


def chat_prompt(request: ChatRequest, render: Callable[..., str]) -> str:
    """The prompt text: messages through the model's chat template; a trailing assistant message is continued."""
    if request.tools:
        raise APIError(400, "tools are not supported by this server", param="tools")
    if (request.response_format or {}).get("type", "text") != "text":
        raise APIError(400, "only response_format type 'text' is supported", param="response_format")
    if not request.messages:
        raise APIError(400, "messages must not be empty", param="messages")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": _text(m.content)}
                for m in request.messages]
    prefix = ""
    if len(messages) > 1 and messages[-1]["role"] == "assistant":
        prefix = messages.pop()["content"]
    return render(messages, add_generation_prompt=True) + prefix


def _text(content: str | list[TextPart] | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content)
    return content or ""


def sampling_params(request: _Request, chat: bool, prompt_tokens: int, context: int, vocab_size: int) -> SamplingParams:
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


class Choices:
    """Events gathered per choice, and OpenAI's shapes of them: stream chunk choices and final choices.

    With `splitters` (chat, one per choice) a reasoning model's thinking goes to `reasoning_content`.
    """

    def __init__(self, count: int, tokens, chat: bool, logprobs: bool, splitters: list | None = None):
        self.tokens, self.chat, self.want_logprobs = tokens, chat, logprobs  # tokens: token_text, token_bytes
        self.splitters = splitters
        self.reasoning: list[list[str]] = [[] for _ in range(count)]
        self.text: list[list[str]] = [[] for _ in range(count)]
        self.logprobs: list[list[dict]] = [[] for _ in range(count)]
        self.offsets = [0] * count  # text offset of the next token (legacy completions logprobs)
        self.counts = [0] * count
        self.finish: list[str | None] = [None] * count

    def add(self, index: int, event) -> list[dict]:
        """Record one event; return the stream choices it makes (none when it carries nothing new)."""
        entry = self._logprob(index, event.logprob) if self.want_logprobs and event.logprob else None
        self.counts[index] += event.token_id is not None
        reasoning, text = self._split(index, event)
        self.reasoning[index].append(reasoning)
        self.text[index].append(text)
        self.finish[index] = event.finish_reason or self.finish[index]
        if self.chat:
            out = []
            if text or reasoning or entry:
                delta = {"reasoning_content": reasoning} if reasoning else {}
                delta = {**delta, "content": text} if text or not reasoning else delta
                out.append({"index": index, "delta": delta,
                            "logprobs": {"content": [_chat_entry(entry)]} if entry else None, "finish_reason": None})
            if event.finish_reason:
                out.append({"index": index, "delta": {}, "logprobs": None, "finish_reason": event.finish_reason})
            return out
        if not (text or entry or event.finish_reason):
            return []
        return [{"index": index, "text": text, "logprobs": _legacy([entry]) if entry else None,
                 "finish_reason": event.finish_reason}]

    def _split(self, index: int, event) -> tuple[str, str]:
        """(reasoning, answer) text of an event; all answer without a splitter."""
        if self.splitters is None:
            return "", event.text or ""
        return self.splitters[index].feed(event.text or "", final=bool(event.finish_reason))

    def role_delta(self, index: int) -> dict:
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

    def final(self) -> list[dict]:
        out = []
        for i, parts in enumerate(self.text):
            text, finish = "".join(parts), self.finish[i] or "length"
            if self.chat:
                logprobs = {"content": [_chat_entry(e) for e in self.logprobs[i]]} if self.want_logprobs else None
                message = {"role": "assistant", "content": text}
                if self.splitters is not None:
                    message["reasoning_content"] = "".join(self.reasoning[i]) or None
                out.append({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish})
            else:
                logprobs = _legacy(self.logprobs[i]) if self.want_logprobs else None
                out.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish})
        return out

    def usage(self, prompt_tokens: int) -> dict:
        completion = sum(self.counts)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    def _logprob(self, index: int, logprob: dict) -> dict:
        token = self.tokens.token_text(logprob["token"])
        top = [{"token": self.tokens.token_text(t), "logprob": lp, "bytes": self.tokens.token_bytes(t)}
               for t, lp in logprob["top"].items()]
        entry = {"token": token, "logprob": logprob["logprob"], "bytes": self.tokens.token_bytes(logprob["token"]),
                 "top_logprobs": top, "text_offset": self.offsets[index]}
        self.offsets[index] += len(bytes(entry["bytes"]).decode("utf-8", errors="ignore"))
        self.logprobs[index].append(entry)
        return entry


def _chat_entry(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "text_offset"}


def _legacy(entries: list[dict]) -> dict:
    """Completions' logprobs: parallel lists over tokens."""
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": [e["text_offset"] for e in entries]}
