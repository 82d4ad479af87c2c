"""One call to a LangChain chat model, recorded as a trace Step (prompt, completion, tokens, time)."""
from __future__ import annotations

import logging
import time

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from .trace import Step

log = logging.getLogger(__name__)


def render_messages(messages: list[BaseMessage]) -> str:
    """The prompt as text, one `role: content` block per message, for the trace."""
    return "\n\n".join(f"{m.type}: {m.content}" for m in messages)


def _usage(message: AIMessage) -> tuple[int, int]:
    usage = getattr(message, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))


def _step(messages, message: AIMessage, name: str, started: float) -> Step:
    prompt_tokens, completion_tokens = _usage(message)
    meta = {k: v for k, v in (message.response_metadata or {}).items() if k in ("cumulative_logprob", "finish_reason")}
    return Step(kind="llm", name=name, input=render_messages(messages), output=str(message.content),
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                duration_ms=(time.perf_counter() - started) * 1e3, meta=meta)


def call_model(model: BaseChatModel, messages: list[BaseMessage], name: str, stop: list[str] | None = None,
               **kwargs) -> Step:
    """Invoke the model once; the Step's output is the completion text."""
    started = time.perf_counter()
    message = model.invoke(messages, stop=stop, **kwargs)
    return _step(messages, message, name, started)


def sample_model(model: BaseChatModel, messages: list[BaseMessage], k: int, name: str, stop: list[str] | None = None,
                 **kwargs) -> list[Step]:
    """k independent completions of the same prompt, sent together (LangChain's batch call)."""
    started = time.perf_counter()
    config_kwargs = {"stop": stop, **kwargs}
    replies = model.batch([messages] * k, **config_kwargs)
    return [_step(messages, reply, f"{name} {i + 1}/{k}", started) for i, reply in enumerate(replies)]
