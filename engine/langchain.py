"""The in-process engine as a LangChain chat model (`BaseChatModel`).

Messages are rendered with the model's own chat template. A trailing assistant message is a
prefix the model continues (as vLLM's `continue_final_message`): PAL prompts end at
`def solution():`, ReAct prompts at `Thought i:`. A batch call is one `Engine.generate` call.
"""
from __future__ import annotations

import logging
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field

from .core import Engine
from .generate import Completion
from .sampling import SamplingParams

log = logging.getLogger(__name__)

ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty",
                   "frequency_penalty", "presence_penalty", "seed", "max_tokens")


class EngineChatModel(BaseChatModel):
    """A chat model over a loaded `Engine`; sampling settings are fields, overridable per call."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Engine = Field(exclude=True)
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 512

    @property
    def _llm_type(self) -> str:
        return "reason-studio-engine"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": str(self.engine.path), **{f: getattr(self, f) for f in SAMPLING_FIELDS}}

    def prompt_text(self, messages: list[BaseMessage]) -> str:
        """The exact text the engine sees for these messages."""
        prefix = ""
        if messages and messages[-1].type == "ai":
            messages, prefix = messages[:-1], str(messages[-1].content)
        chat = [{"role": ROLES.get(m.type, m.type), "content": str(m.content)} for m in messages]
        return self.engine.apply_chat_template(chat, add_generation_prompt=True) + prefix

    def sampling_params(self, stop: list[str] | None = None, **overrides) -> SamplingParams:
        values = {f: overrides.get(f, getattr(self, f)) for f in SAMPLING_FIELDS}
        return SamplingParams(**values, stop=list(stop or []))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager=None,
                  **kwargs: Any) -> ChatResult:
        completion = self.engine.generate([self.prompt_text(messages)], self.sampling_params(stop, **kwargs))[0]
        return ChatResult(generations=[ChatGeneration(message=_message(completion))])

    def batch(self, inputs: list, config=None, *, return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage]:
        """All inputs in one engine call (one decode batch) when they are message lists."""
        if config or not all(isinstance(i, list) for i in inputs):
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        stop = kwargs.pop("stop", None)
        params = self.sampling_params(stop, **kwargs)
        prompts = [self.prompt_text(i) for i in inputs]
        per_prompt = [SamplingParams(**{**params.__dict__, "seed": None if params.seed is None else params.seed + i})
                      for i in range(len(prompts))]
        return [_message(c) for c in self.engine.generate(prompts, per_prompt)]


def _message(completion: Completion) -> AIMessage:
    usage = {"input_tokens": completion.prompt_tokens, "output_tokens": len(completion.token_ids),
             "total_tokens": completion.prompt_tokens + len(completion.token_ids)}
    return AIMessage(completion.text, usage_metadata=usage,
                     response_metadata={"finish_reason": completion.finish_reason,
                                        "cumulative_logprob": completion.cumulative_logprob})
