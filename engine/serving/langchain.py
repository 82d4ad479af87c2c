"""The in-process engine as a LangChain chat model (`BaseChatModel`).

Messages are rendered with the model's own chat template. A trailing assistant message is a
prefix the model continues (as vLLM's `continue_final_message`): PAL prompts end at
`def solution():`, ReAct prompts at `Thought i:`. A plain batch call is one `Engine.generate`
call; a call whose callbacks want tokens streams through `Engine.submit`, and stopping the
stream (a closed generator, a callback that raises) cancels the engine request.
`bind_tools` and `with_structured_output` become the engine's output constraint (serving/tools.py).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import fields
from typing import Any, get_type_hints

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.runnables.config import get_config_list, get_executor_for_config
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, create_model

from ..completion import Completion
from ..core import Engine
from ..reasoning import ReasoningSplitter, split_reasoning
from ..sampling import SamplingParams, sampling_knobs
from ..sampling_params import Constraint
from .structured import ANY_OBJECT
from .tool_calls import ToolCallStream
from .tools import ToolPlan, template_messages, tool_plan

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

    def prompt_text(self, messages: list[BaseMessage], plan: ToolPlan | None = None) -> str:
        """The exact text the engine sees for these messages (and the tools of `plan`)."""
        prefix = ""
        if messages and messages[-1].type == "ai" and not messages[-1].tool_calls:
            messages, prefix = messages[:-1], str(messages[-1].content)
        template = self.engine.chat_template
        shown, tools = template_messages([_openai_message(m) for m in messages], plan, template.takes_tools,
                                         template.source)
        return template.render(shown, add_generation_prompt=True, tools=tools) + prefix

    def sampling_params(self, stop: list[str] | None = None, **overrides) -> SamplingParams:
        """Fields overridden per call; bound `tools`/`tool_choice` or `constraint` (a Constraint or {"kind", "spec"})
        make the output constraint."""
        values = {f: overrides.get(f, getattr(self, f)) for f in (*SAMPLING_FIELDS, "logprobs")}
        plan, constraint = _plan(overrides), _constraint(overrides.get("constraint"))
        if plan and constraint:
            raise ValueError("bound tools and a structured-output schema are two output constraints; use one")
        return SamplingParams(**values, stop=list(stop or []), constraint=plan.constraint() if plan else constraint)

    def bind_tools(self, tools: Sequence, *, tool_choice: str | bool | dict | None = None, strict: bool | None = None,
                   **kwargs: Any) -> Runnable:
        """Offer tools (LangChain tools, functions, Pydantic classes, OpenAI dicts); calls come back as
        AIMessage.tool_calls. tool_choice: "auto" (default), "none", "any"/"required"/True, or a tool's name;
        strict: OpenAI's, closes every object of the arguments (LangChain's tool schemas allow extra keys)."""
        specs = [convert_to_openai_tool(t, strict=strict) for t in tools]
        return self.bind(tools=specs, tool_choice=_tool_choice(tool_choice), **kwargs)

    def with_structured_output(self, schema: dict | type, *, method: str = "json_schema", include_raw: bool = False,
                               **kwargs: Any) -> Runnable:
        """Replies parsed into `schema` (Pydantic class, TypedDict, JSON schema). json_schema: the engine
        constrains the output to the schema; json_mode: to any JSON object; function_calling: a forced tool call.
        strict=True closes every object of the schema to the keys it names (as OpenAI's strict mode)."""
        strict = kwargs.pop("strict", None)
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        if method not in ("json_schema", "json_mode"):
            raise ValueError(f"method must be json_schema, json_mode or function_calling, got {method!r}")
        json_schema = _closed(convert_to_json_schema(schema)) if strict else convert_to_json_schema(schema)
        spec = json.dumps(json_schema) if method == "json_schema" else ANY_OBJECT
        llm = self.bind(constraint=Constraint("json_schema", spec),
                        ls_structured_output_format={"kwargs": {"method": method}, "schema": schema})
        is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
        return _parsed(llm, PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser(),
                       include_raw)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if _wants_tokens(run_manager):
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        plan = _plan(kwargs)
        prompt = self.prompt_text(messages, plan)
        completion = self.engine.generate([prompt], self.sampling_params(stop, **kwargs))[0]
        return ChatResult(generations=[ChatGeneration(message=self._message(completion, prompt, plan))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """Text chunks as the engine decodes; the last, empty chunk carries usage and finish_reason.

        A reasoning model's thinking streams in `additional_kwargs["reasoning_content"]`, its answer as content.
        """
        plan = _plan(kwargs)
        prompt = self.prompt_text(messages, plan)
        handle = self.engine.submit(prompt, self.sampling_params(stop, **kwargs))
        splitter = ReasoningSplitter(self.engine.reasoning_tags, self.engine.reasoning_tags.open_at_end(prompt))
        calls = ToolCallStream() if plan else None
        try:
            for event in handle:
                if event.index == 0 and (event.text or event.finish_reason):
                    parts = splitter.feed(event.text or "", final=bool(event.finish_reason))
                    chunk = ChatGenerationChunk(message=_chunk(*parts, calls, final=bool(event.finish_reason)))
                    if run_manager and event.text:  # LangChain's own streaming loop passes none and reports tokens itself
                        run_manager.on_llm_new_token(event.text, chunk=chunk)
                    yield chunk
            yield ChatGenerationChunk(message=self._last_chunk(handle.result()[0], calls is not None and calls.complete))
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
        stop, plan = kwargs.pop("stop", None), _plan(kwargs)
        per_prompt = [self.sampling_params(stop, **{**kwargs, "seed": s}) for s in seeds]
        prompts = [self.prompt_text(i, plan) for i in inputs]
        return [self._message(c, p, plan) for c, p in zip(self.engine.generate(prompts, per_prompt), prompts)]

    def _message(self, completion: Completion, prompt: str, plan: ToolPlan | None = None) -> AIMessage:
        """The reply; a reasoning model's thinking goes to `additional_kwargs["reasoning_content"]`, a call to tool_calls."""
        tags = self.engine.reasoning_tags
        reasoning, answer = split_reasoning(completion.text, tags, tags.open_at_end(prompt))
        calls = ToolCallStream()
        if plan:
            calls.feed(answer, final=True)
        tool_calls = [_tool_call(c) for c in calls.calls] if calls.complete else []
        return AIMessage(calls.content if tool_calls else answer, tool_calls=tool_calls,
                         additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
                         usage_metadata=_usage(completion), response_metadata=self._metadata(completion, bool(tool_calls)))

    def _metadata(self, completion: Completion, called: bool = False) -> dict:
        """finish_reason, cumulative_logprob and, when asked for, each token's logprob and top alternatives."""
        finish = "tool_calls" if called else completion.finish_reason
        metadata = {"finish_reason": finish, "cumulative_logprob": completion.cumulative_logprob}
        if completion.logprobs is not None:
            metadata["logprobs"] = {"content": [
                {"token": self._token_text(e["token"]), "logprob": e["logprob"],
                 "top_logprobs": [{"token": self._token_text(t), "logprob": lp} for t, lp in e["top"].items()]}
                for e in completion.logprobs]}
        return metadata

    def _token_text(self, token_id: int) -> str:
        return self.engine.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")

    def _last_chunk(self, completion: Completion, called: bool = False) -> AIMessageChunk:
        # Chunks are summed when joined (text concatenated, usage added), so only this one carries them.
        return AIMessageChunk("", usage_metadata=_usage(completion), response_metadata=self._metadata(completion, called),
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
    """LangChain's usage metadata; cache_read: the prompt tokens the prefix cache supplied (not computed)."""
    return {"input_tokens": completion.prompt_tokens, "output_tokens": len(completion.token_ids),
            "total_tokens": completion.prompt_tokens + len(completion.token_ids),
            "input_token_details": {"cache_read": completion.cached_tokens}}


def _chunk(reasoning: str, answer: str, calls: ToolCallStream | None = None, final: bool = False) -> AIMessageChunk:
    deltas = []
    if calls is not None:
        answer, deltas = calls.feed(answer, final)
    chunks = [{"name": d["function"].get("name"), "args": d["function"]["arguments"], "id": d.get("id"),
               "index": d["index"]} for d in deltas]
    return AIMessageChunk(answer, additional_kwargs={"reasoning_content": reasoning} if reasoning else {},
                          tool_call_chunks=chunks)


def _constraint(value: Constraint | dict | None) -> Constraint | None:
    """A Constraint, also from the neutral {"kind", "spec"} that strategies send (prompts/ cannot import engine/)."""
    if value is None or isinstance(value, Constraint):
        return value
    spec = value["spec"]
    return Constraint(value["kind"], tuple(spec) if isinstance(spec, list) else spec)


def _plan(kwargs: dict) -> ToolPlan | None:
    return tool_plan(kwargs.get("tools"), kwargs.get("tool_choice"))


def _tool_choice(choice: str | bool | dict | None) -> str | dict | None:
    """LangChain's tool_choice values in OpenAI's terms."""
    if choice in (None, "auto", "none") or isinstance(choice, dict):
        return choice
    if choice in (True, "any", "required"):
        return "required"
    return {"type": "function", "function": {"name": choice}}


def _openai_message(message: BaseMessage) -> dict:
    """A LangChain message as the OpenAI-shaped dict serving/tools.py renders (calls, tool results)."""
    out = {"role": ROLES.get(message.type, message.type), "content": str(message.content)}
    if isinstance(message, AIMessage) and message.tool_calls:
        out["tool_calls"] = [{"id": c.get("id") or "", "type": "function", "function": {
            "name": c["name"], "arguments": json.dumps(c["args"], ensure_ascii=False)}} for c in message.tool_calls]
    if isinstance(message, ToolMessage):
        out["tool_call_id"] = message.tool_call_id
    return out


def _closed(schema):
    """The schema with every object that names its properties closed to them (additionalProperties: false)."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {k: _closed(v) for k, v in schema.items()}
    return {"additionalProperties": False, **closed} if "properties" in schema else closed


def _tool_call(call: dict) -> dict:
    return {"name": call["function"]["name"], "args": json.loads(call["function"]["arguments"]), "id": call["id"],
            "type": "tool_call"}


def _parsed(llm: Runnable, parser, include_raw: bool) -> Runnable:
    """llm | parser, or (include_raw) {"raw", "parsed", "parsing_error"} as LangChain's chat models return."""
    if not include_raw:
        return llm | parser
    parse = RunnablePassthrough.assign(parsed=lambda x: parser.invoke(x["raw"]), parsing_error=lambda _: None)
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parse.with_fallbacks([failed], exception_key="parsing_error")
