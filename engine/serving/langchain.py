"""The in-process engine as a LangChain chat model (`BaseChatModel`).

Messages are rendered with the model's own chat template. A trailing assistant message is a
prefix the model continues (as vLLM's `continue_final_message`): PAL prompts end at
`def solution():`, ReAct prompts at `Thought i:`. A plain batch call is one `Engine.generate`
call; a call whose callbacks want tokens streams through `Engine.submit`, and stopping the
stream (a closed generator, a callback that raises) cancels the engine request.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import fields
from typing import Any, get_type_hints

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables.config import get_config_list, get_executor_for_config
from pydantic import ConfigDict, Field, create_model

from ..completion import Completion
from ..core import Engine
from ..reasoning import ReasoningSplitter, split_reasoning
from ..sampling import SamplingParams, sampling_knobs

log = logging.getLogger(__name__)

ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
SAMPLING_FIELDS = sampling_knobs()  # each is also a field of the chat model below


class _EngineChatModel(BaseChatModel):
    """A chat model over a loaded `Engine`; the sampling knobs of SamplingParams are its fields
    (added below), overridable per call.

    `streaming=True` (LangChain's convention) streams every call; without it a call streams
    only when one of its callbacks implements `on_llm_new_token`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Engine = Field(exclude=True)
    streaming: bool = False
    logprobs: int | None = None  # top-N alternatives per token, in response_metadata["logprobs"] (OpenAI's shape)

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
        values = {f: overrides.get(f, getattr(self, f)) for f in (*SAMPLING_FIELDS, "logprobs")}
        return SamplingParams(**values, stop=list(stop or []))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if _wants_tokens(run_manager):
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        prompt = self.prompt_text(messages)
        completion = self.engine.generate([prompt], self.sampling_params(stop, **kwargs))[0]
        return ChatResult(generations=[ChatGeneration(message=self._message(completion, prompt))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """Text chunks as the engine decodes; the last, empty chunk carries usage and finish_reason.

        A reasoning model's thinking streams in `additional_kwargs["reasoning_content"]`, its answer as content.
        """
        prompt = self.prompt_text(messages)
        handle = self.engine.submit(prompt, self.sampling_params(stop, **kwargs))
        splitter = ReasoningSplitter(self.engine.reasoning_tags, self.engine.reasoning_tags.open_at_end(prompt))
        try:
            for event in handle:
                if event.index == 0 and (event.text or event.finish_reason):
                    parts = splitter.feed(event.text or "", final=bool(event.finish_reason))
                    chunk = ChatGenerationChunk(message=_chunk(*parts))
                    if run_manager and event.text:  # LangChain's own streaming loop passes none and reports tokens itself
                        run_manager.on_llm_new_token(event.text, chunk=chunk)
                    yield chunk
            yield ChatGenerationChunk(message=self._last_chunk(handle.result()[0]))
        finally:
            handle.cancel()  # a no-op once finished; frees the KV blocks when the consumer stopped early

    def batch(self, inputs: list, config=None, *, return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage]:
        """All inputs in one engine call (one decode batch) when they are message lists.

        With a config (callbacks that may stream, tags) each input is its own call, all submitted
        together so the engine's scheduler still decodes them in one batch. A seed becomes
        seed + i for input i, so seeded samples differ.
        """
        if not all(isinstance(i, list) for i in inputs):
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        seed = kwargs.pop("seed", self.seed)
        seeds = [None if seed is None else seed + i for i in range(len(inputs))]
        if config:
            return self._batch_calls(inputs, get_config_list(config, len(inputs)), seeds, return_exceptions, kwargs)
        stop = kwargs.pop("stop", None)
        per_prompt = [self.sampling_params(stop, **{**kwargs, "seed": s}) for s in seeds]
        prompts = [self.prompt_text(i) for i in inputs]
        return [self._message(c, p) for c, p in zip(self.engine.generate(prompts, per_prompt), prompts)]

    def _message(self, completion: Completion, prompt: str) -> AIMessage:
        """The reply; a reasoning model's thinking goes to `additional_kwargs["reasoning_content"]`."""
        tags = self.engine.reasoning_tags
        reasoning, answer = split_reasoning(completion.text, tags, tags.open_at_end(prompt))
        return AIMessage(answer, additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
                         usage_metadata=_usage(completion), response_metadata=self._metadata(completion))

    def _metadata(self, completion: Completion) -> dict:
        """finish_reason, cumulative_logprob and, when asked for, each token's logprob and top alternatives."""
        metadata = {"finish_reason": completion.finish_reason, "cumulative_logprob": completion.cumulative_logprob}
        if completion.logprobs is not None:
            metadata["logprobs"] = {"content": [
                {"token": self._token_text(e["token"]), "logprob": e["logprob"],
                 "top_logprobs": [{"token": self._token_text(t), "logprob": lp} for t, lp in e["top"].items()]}
                for e in completion.logprobs]}
        return metadata

    def _token_text(self, token_id: int) -> str:
        return self.engine.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")

    def _last_chunk(self, completion: Completion) -> AIMessageChunk:
        # Chunks are summed when joined (text concatenated, usage added), so only this one carries them.
        return AIMessageChunk("", usage_metadata=_usage(completion), response_metadata=self._metadata(completion),
                              chunk_position="last")

    def _batch_calls(self, inputs: list, configs: list, seeds: list, return_exceptions: bool,
                     kwargs: dict) -> list:
        def call(i: int):
            try:
                return self.invoke(inputs[i], configs[i], **{**kwargs, "seed": seeds[i]})
            except Exception as exc:  # as Runnable.batch: returned in place when asked, else raised
                if return_exceptions:
                    return exc
                raise

        with get_executor_for_config(configs[0]) as pool:
            return list(pool.map(call, range(len(inputs))))


CHAT_DEFAULTS = {"max_tokens": 512}  # a chat turn is longer than SamplingParams' raw-completion default
_HINTS = get_type_hints(SamplingParams)
EngineChatModel = create_model(
    "EngineChatModel", __base__=_EngineChatModel, __module__=__name__, __doc__=_EngineChatModel.__doc__,
    **{f.name: (_HINTS[f.name], CHAT_DEFAULTS.get(f.name, f.default)) for f in fields(SamplingParams)
       if f.name in SAMPLING_FIELDS})


def _wants_tokens(run_manager: CallbackManagerForLLMRun | None) -> bool:
    """True when some callback of this call implements `on_llm_new_token`."""
    handlers = run_manager.handlers if run_manager else []
    return any(not h.ignore_llm and type(h).on_llm_new_token is not BaseCallbackHandler.on_llm_new_token
               for h in handlers)


def _usage(completion: Completion) -> dict:
    return {"input_tokens": completion.prompt_tokens, "output_tokens": len(completion.token_ids),
            "total_tokens": completion.prompt_tokens + len(completion.token_ids)}


def _chunk(reasoning: str, answer: str) -> AIMessageChunk:
    return AIMessageChunk(answer, additional_kwargs={"reasoning_content": reasoning} if reasoning else {})
