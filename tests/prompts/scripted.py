"""A scripted LangChain chat model for strategy tests: replies come from a queue, stops apply."""
from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    """Pops one scripted reply per call, cuts it at the first stop string like a real model."""

    replies: list[Any] = Field(default_factory=list)  # str, or (str, cumulative_logprob)
    calls: list[dict] = Field(default_factory=list)
    drops_constraints: str | None = None  # when set: a call's constraint is reported dropped, for this reason

    def enqueue(self, *replies) -> ScriptedChatModel:
        self.replies.extend(replies)
        return self

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager=None, **kwargs) -> ChatResult:
        if not self.replies:
            raise RuntimeError("the scripted model has no reply left")
        reply = self.replies.pop(0)
        text, logprob = reply if isinstance(reply, tuple) else (reply, 0.0)
        cuts = [text.index(s) for s in stop or [] if s in text]
        text = text[: min(cuts)] if cuts else text
        self.calls.append({"messages": messages, "stop": stop, "kwargs": kwargs})
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        message = AIMessage(text, usage_metadata={"input_tokens": prompt_tokens, "output_tokens": len(text.split()),
                                                  "total_tokens": prompt_tokens + len(text.split())},
                            response_metadata={"cumulative_logprob": logprob})
        if self.drops_constraints and kwargs.get("constraint"):
            message.response_metadata["constraint_dropped"] = self.drops_constraints
        return ChatResult(generations=[ChatGeneration(message=message)])
