"""A chat model that answers a run's first calls from the record, then hands the rest to a real model.

A fork or replay re-runs the strategy from its start (prompts/ knows nothing of forking): the
strategy rebuilds its own state (scratchpad, counters, seen actions) from the recorded replies,
which come back in call order without any model work. A reply marked `continued` is a prefix the
real model goes on from (branching at a token). Call order is what maps calls to steps, so a batch
call (self-consistency) takes its replies by input position, never by thread timing.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

KEPT_METADATA = ("cumulative_logprob", "finish_reason", "constraint_dropped")  # what a step's meta takes back


@dataclass
class Reply:
    """One model call answered from the record: a step's output with its tokens and meta, or edited text."""

    output: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    meta: dict = field(default_factory=dict)
    continued: bool = False  # the real model continues after `output` (its meta["logprobs"]: the kept tokens)
    edited: bool = False  # a person's text, not the record's


def recorded_reply(step: dict) -> Reply:
    """The reply that gives back a stored llm step."""
    return Reply(step["output"], step["prompt_tokens"], step["completion_tokens"], dict(step.get("meta") or {}))


class ReplayChatModel(BaseChatModel):
    """Answers call i with replies[i] while there is one; later calls go to `inner`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: Any  # the real chat model (a BaseChatModel, or one bound to a config)
    replies: list[Reply]
    _next: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "replay"

    @property
    def calls_replayed(self) -> int:
        """How many calls the record answered so far (an edited reply is not the record's)."""
        return sum(1 for reply in self.replies[:self._next] if not reply.edited)

    def _claim(self, count: int) -> list[Reply | None]:
        """The replies for the next `count` calls, in order (None: the real model answers)."""
        with self._lock:
            start, self._next = self._next, self._next + count
        return [self.replies[i] if i < len(self.replies) else None for i in range(start, start + count)]

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager=None,
                  **kwargs: Any) -> ChatResult:
        reply = self._claim(1)[0]
        if reply is None:
            message = self.inner.invoke(messages, stop=stop, **kwargs)
        elif reply.continued:
            message = continued_message(reply, self.inner.invoke(with_prefix(messages, reply.output), stop=stop, **kwargs))
        else:
            message = recorded_message(reply)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def batch(self, inputs: list, config=None, *, return_exceptions: bool = False, **kwargs: Any) -> list:
        """Recorded replies by input position; the others go to `inner` in one batch call (one decode batch)."""
        if not all(isinstance(i, list) for i in inputs):
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        replies = self._claim(len(inputs))
        out: list = [None if r is None or r.continued else recorded_message(r) for r in replies]
        live = [i for i, r in enumerate(replies) if out[i] is None]
        if live:
            prompts = [inputs[i] if replies[i] is None else with_prefix(inputs[i], replies[i].output) for i in live]
            answers = self.inner.batch(prompts, config, return_exceptions=return_exceptions, **kwargs)
            for i, answer in zip(live, answers):
                keep = replies[i] is None or isinstance(answer, BaseException)
                out[i] = answer if keep else continued_message(replies[i], answer)
        return out


def with_prefix(messages: list[BaseMessage], text: str) -> list[BaseMessage]:
    """The messages with `text` at the end of the trailing assistant prefix (the model continues it)."""
    if messages and messages[-1].type == "ai" and not getattr(messages[-1], "tool_calls", None):
        return [*messages[:-1], AIMessage(str(messages[-1].content) + text)]
    return [*messages, AIMessage(text)]


def recorded_message(reply: Reply) -> AIMessage:
    """The AIMessage a backend would have sent for this recorded step (so llm_call rebuilds the same step)."""
    meta = reply.meta
    usage = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens,
             "total_tokens": reply.prompt_tokens + reply.completion_tokens}
    if meta.get("cached_prompt_tokens") is not None:
        usage["input_token_details"] = {"cache_read": meta["cached_prompt_tokens"]}
    metadata = {k: meta[k] for k in KEPT_METADATA if k in meta}
    if meta.get("logprobs"):
        metadata["logprobs"] = {"content": openai_logprobs(meta["logprobs"])}
    extra = {"reasoning_content": meta["reasoning"]} if meta.get("reasoning") else {}
    return AIMessage(reply.output, usage_metadata=usage, response_metadata=metadata, additional_kwargs=extra)


def continued_message(reply: Reply, answer: AIMessage) -> AIMessage:
    """The prefix plus what the model wrote after it; the prefix's tokens (when known) lead the logprobs."""
    metadata = dict(answer.response_metadata or {})
    tail = (metadata.get("logprobs") or {}).get("content")
    if reply.meta.get("logprobs") and tail is not None:
        metadata["logprobs"] = {"content": openai_logprobs(reply.meta["logprobs"]) + list(tail)}
    return AIMessage(reply.output + str(answer.content), usage_metadata=answer.usage_metadata,
                     response_metadata=metadata, additional_kwargs=dict(answer.additional_kwargs or {}))


def openai_logprobs(tokens: list) -> list[dict]:
    """A step's [token, logprob, [[alternative, logprob], …]] list in OpenAI's `logprobs.content` shape."""
    return [{"token": token, "logprob": logprob,
             "top_logprobs": [{"token": alt, "logprob": alt_logprob} for alt, alt_logprob in alternatives]}
            for token, logprob, alternatives in tokens]
