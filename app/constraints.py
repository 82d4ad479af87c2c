"""How a strategy's output constraint reaches each backend.

Strategies send the neutral {"kind", "spec"} of their template as the `constraint` keyword of a
call (prompts/llm_call.py). The engine's chat model takes it as it is. Over HTTP it goes in the
request field the server follows, found once per chat model by a probe (a tiny completion whose
constraint no free model would meet): `structured_outputs` (ours, vLLM), vLLM's older `guided_*`,
or llama.cpp's `grammar` (GBNF; Lark marked `%llguidance`, which llama.cpp built with llguidance
reads). llama-cpp-python in-process takes GBNF and JSON schemas. A constraint a backend cannot
carry, or that the server refuses, is dropped: the call runs free and its reply says why in
`response_metadata["constraint_dropped"]`, which the trace keeps.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from functools import cache

log = logging.getLogger(__name__)

PROBE_TEXT = "zq7qz"  # what a probe's constraint allows; a free model does not write it
# dialect -> (probe fields, {constraint kind -> request field}); tried in this order
DIALECTS = {
    "structured_outputs": ({"structured_outputs": {"regex": PROBE_TEXT}},
                           {"json_schema": "json", "regex": "regex", "choice": "choice", "lark": "grammar",
                            "gbnf": "grammar"}),
    "guided": ({"guided_regex": PROBE_TEXT},
               {"json_schema": "guided_json", "regex": "guided_regex", "choice": "guided_choice",
                "lark": "guided_grammar", "gbnf": "guided_grammar"}),
    "llama.cpp": ({"grammar": f'root ::= "{PROBE_TEXT}"'},
                  {"json_schema": "json_schema", "lark": "grammar", "gbnf": "grammar"}),
}
LLGUIDANCE_MARK = "%llguidance {}\n"  # llama.cpp reads a grammar that opens with it as llguidance's Lark


def request_fields(dialect: str, constraint: dict) -> dict | None:
    """The extra request body that carries `constraint` in a server dialect; None when it has no field for it."""
    field = DIALECTS[dialect][1].get(constraint["kind"])
    if field is None:
        return None
    kind, spec = constraint["kind"], constraint["spec"]
    value = json.loads(spec) if kind == "json_schema" else spec
    if dialect == "llama.cpp" and kind == "lark":
        value = LLGUIDANCE_MARK + spec
    return {"structured_outputs": {field: value}} if dialect == "structured_outputs" else {field: value}


def probe_dialect(client, model: str) -> str | None:
    """The first dialect whose probe the server obeys (an `openai.OpenAI` client); None when it obeys none."""
    import openai

    for dialect, (fields, _) in DIALECTS.items():
        try:
            reply = client.completions.create(model=model, prompt="Say hello.", max_tokens=8, temperature=0,
                                              extra_body=fields)
        except openai.OpenAIError as exc:  # an unknown field or endpoint: this dialect is not spoken there
            log.info("constraint probe %s: %s", dialect, exc)
            continue
        if reply.choices and reply.choices[0].text.strip() == PROBE_TEXT:
            return dialect
    return None


class ConstraintCarrier:
    """Mixin for a LangChain chat class: takes the `constraint` keyword and sends what `_carry` makes of
    it; when it cannot be carried, or the backend refuses it (`_refusals`), the call runs free and says why."""

    def _carry(self, constraint: dict) -> tuple[dict, str | None]:
        """(call keywords that carry it, None), or ({}, why it cannot be carried)."""
        raise NotImplementedError

    def _refusals(self) -> tuple[type[Exception], ...]:
        return ()

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        constraint = kwargs.pop("constraint", None)
        if not constraint:
            return super()._generate(messages, stop, run_manager, **kwargs)
        carried, dropped = self._carry(constraint)
        if carried:
            try:
                return super()._generate(messages, stop, run_manager, **kwargs, **carried)
            except self._refusals() as exc:
                dropped = _refused(constraint, exc)
        result = super()._generate(messages, stop, run_manager, **kwargs)
        result.generations[0].message.response_metadata["constraint_dropped"] = dropped
        return result

    def _stream(self, messages, stop=None, run_manager=None, **kwargs) -> Iterator:
        constraint = kwargs.pop("constraint", None)
        if not constraint:
            yield from super()._stream(messages, stop, run_manager, **kwargs)
            return
        carried, dropped = self._carry(constraint)
        if carried:
            chunks = super()._stream(messages, stop, run_manager, **kwargs, **carried)
            try:
                first = next(chunks, None)  # a refusal comes before the first chunk
            except self._refusals() as exc:
                dropped = _refused(constraint, exc)
            else:
                yield from ([] if first is None else [first])
                yield from chunks
                return
        for i, chunk in enumerate(super()._stream(messages, stop, run_manager, **kwargs)):
            if i == 0:  # once: chunks' metadata are joined, and strings would be repeated
                chunk.message.response_metadata["constraint_dropped"] = dropped
            yield chunk


def _refused(constraint: dict, exc: Exception) -> str:
    log.warning("the backend refused a %s constraint; the call runs free: %s", constraint["kind"], exc)
    return f"the backend refused the {constraint['kind']} constraint: {exc}"


@cache
def openai_chat_class():
    """ChatOpenAI that carries constraints in the dialect its server follows (probed on first use)."""
    import openai
    from langchain_openai import ChatOpenAI
    from pydantic import PrivateAttr

    class ConstrainedChatOpenAI(ConstraintCarrier, ChatOpenAI):
        _dialect: list = PrivateAttr(default_factory=list)  # empty until probed, then [dialect or None]
        _probe_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

        def dialect(self) -> str | None:
            """The server's constraint dialect, probed once (concurrent first calls wait for one probe)."""
            with self._probe_lock:
                if not self._dialect:
                    client = self.root_client.with_options(max_retries=0, timeout=60)
                    self._dialect.append(probe_dialect(client, self.model_name))
                    log.info("%s follows constraints as: %s", self.openai_api_base, self._dialect[0])
                return self._dialect[0]

        def _carry(self, constraint: dict) -> tuple[dict, str | None]:
            dialect = self.dialect()
            if dialect is None:
                return {}, (f"the server at {self.openai_api_base} follows none of: "
                            f"{', '.join(DIALECTS)} (probed once)")
            fields = request_fields(dialect, constraint)
            if fields is None:
                return {}, f"the server's {dialect} field takes no {constraint['kind']} constraint"
            return {"extra_body": {**(self.extra_body or {}), **fields}}, None

        def _refusals(self) -> tuple[type[Exception], ...]:
            return (openai.BadRequestError, openai.UnprocessableEntityError)

    return ConstrainedChatOpenAI


def llama_cpp_grammar(constraint: dict) -> tuple[dict, str | None]:
    """llama-cpp-python's `grammar` keyword for a constraint (GBNF, JSON schema), or why there is none."""
    from llama_cpp import LlamaGrammar

    kind, spec = constraint["kind"], constraint["spec"]
    if kind not in ("gbnf", "json_schema"):
        return {}, f"llama-cpp-python takes GBNF grammars and JSON schemas, not {kind}"
    try:
        grammar = LlamaGrammar.from_string(spec, verbose=False) if kind == "gbnf" else \
            LlamaGrammar.from_json_schema(spec, verbose=False)
    except ValueError as exc:
        return {}, f"llama-cpp-python cannot read the {kind} constraint: {exc}"
    return {"grammar": grammar}, None
