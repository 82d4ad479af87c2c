"""One call to a LangChain chat model, recorded as a trace Step (prompt, completion, tokens, time).

A reasoning model's thinking (the backend's `reasoning_content`, or a `<think>…</think>` block
left in the text) goes to the step's `meta["reasoning"]`; the step's output, which strategies
parse and score, is the answer alone. Per-token log-probabilities, when the backend returns them
(OpenAI's `logprobs.content` shape), go to `meta["logprobs"]` as [token, logprob, [[alt, logprob], …]].
The prompt tokens a backend took from its prefix cache go to `meta["cached_prompt_tokens"]`.
"""
from __future__ import annotations

import logging
import re
import time
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from .trace import Step, Trace

log = logging.getLogger(__name__)


def render_messages(messages: list[BaseMessage]) -> str:
    """The prompt as text, one `role: content` block per message, for the trace."""
    return "\n\n".join(f"{m.type}: {m.content}" for m in messages)


def _usage(message: AIMessage) -> tuple[int, int]:
    usage = getattr(message, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))


def cached_prompt_tokens(message: AIMessage) -> int | None:
    """The prompt tokens the backend read from its prefix cache instead of computing (LangChain's
    `input_token_details.cache_read`), or None when it does not say."""
    details = (getattr(message, "usage_metadata", None) or {}).get("input_token_details") or {}
    return None if details.get("cache_read") is None else int(details["cache_read"])


# an inline thinking block at the start: "<think>…</think>", or "…</think>" when the prompt opened it
_THINKING = re.compile(r"\s*(?:<think>)?(.*?)</think>\s*", re.DOTALL)


def split_thinking(message: AIMessage) -> tuple[str, str]:
    """(reasoning, answer) of a reply."""
    text = str(message.content)
    reasoning = (message.additional_kwargs or {}).get("reasoning_content")
    if reasoning:
        return str(reasoning), text
    inline = _THINKING.match(text)
    if inline:
        return inline.group(1).strip(), text[inline.end():]
    if text.lstrip().startswith("<think>"):  # cut off while thinking: no answer yet
        return text.lstrip()[len("<think>"):].strip(), ""
    return "", text


def token_logprobs(message: AIMessage) -> list | None:
    """[token, logprob, [[alternative, logprob], …]] per generated token, or None when the backend sent none."""
    content = ((message.response_metadata or {}).get("logprobs") or {}).get("content")
    if not content:
        return None
    return [[entry["token"], round(float(entry["logprob"]), 4),
             [[alt["token"], round(float(alt["logprob"]), 4)] for alt in entry.get("top_logprobs") or ()]]
            for entry in content]


def _step(messages, message: AIMessage, name: str, started: float, constraint: dict | None = None) -> Step:
    prompt_tokens, completion_tokens = _usage(message)
    kept = ("cumulative_logprob", "finish_reason", "constraint_dropped")
    meta = {k: v for k, v in (message.response_metadata or {}).items() if k in kept}
    if constraint:
        meta["constraint"] = constraint["kind"]
    reasoning, answer = split_thinking(message)
    if reasoning:
        meta["reasoning"] = reasoning
    logprobs = token_logprobs(message)
    if logprobs:
        meta["logprobs"] = logprobs
    if (cached := cached_prompt_tokens(message)) is not None:
        meta["cached_prompt_tokens"] = cached
    return Step(kind="llm", name=name, input=render_messages(messages), output=answer,
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                duration_ms=(time.perf_counter() - started) * 1e3, meta=meta)


def _constrained(constraint: dict | None, kwargs: dict) -> dict:
    # only when there is one: a chat model that never heard of the keyword still answers free calls
    return {**kwargs, "constraint": constraint} if constraint else kwargs


def call_model(model: BaseChatModel, messages: list[BaseMessage], name: str, stop: list[str] | None = None,
               constraint: dict | None = None, **kwargs) -> Step:
    """Invoke the model once (held to `constraint` when given); the Step's output is the completion text."""
    started = time.perf_counter()
    message = model.invoke(messages, stop=stop, **_constrained(constraint, kwargs))
    return _step(messages, message, name, started, constraint)


def add_call(trace: Trace, step: Step) -> Step:
    """Add a model call's step, counting it when the backend dropped its constraint."""
    if step.meta.get("constraint_dropped"):
        trace.counters["unconstrained_calls"] = trace.counters.get("unconstrained_calls", 0) + 1
    return trace.add(step)


class _CallTimes(BaseCallbackHandler):
    """When each model call of a batch ended, by LangChain run id (a reply's id names its run)."""

    def __init__(self):
        self.ended: dict[str, float] = {}

    def on_llm_end(self, response, *, run_id: UUID, **kwargs) -> None:
        self.ended[str(run_id)] = time.perf_counter()

    def seconds(self, reply: AIMessage, started: float) -> float | None:
        ended = next((t for run, t in self.ended.items() if run in (reply.id or "")), None)
        return None if ended is None else ended - started


def sample_model(model: BaseChatModel, messages: list[BaseMessage], k: int, name: str, stop: list[str] | None = None,
                 constraint: dict | None = None, **kwargs) -> list[Step]:
    """k independent completions of the same prompt, sent together (LangChain's batch call).

    They start together; each step's duration is its own path's (a short path ends first)."""
    started, started_at, times = time.perf_counter(), round(time.time(), 3), _CallTimes()
    replies = model.batch([messages] * k, config={"callbacks": [times]}, stop=stop, **_constrained(constraint, kwargs))
    steps = []
    for i, reply in enumerate(replies):
        step = _step(messages, reply, f"{name} {i + 1}/{k}", started, constraint)
        own = times.seconds(reply, started)
        step.duration_ms = step.duration_ms if own is None else own * 1e3
        step.meta["started_at"] = started_at
        steps.append(step)
    return steps
