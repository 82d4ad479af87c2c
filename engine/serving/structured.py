"""Output constraints named by request fields: OpenAI's `response_format` (json_object, json_schema),
vLLM's `structured_outputs` {json | regex | choice | grammar | json_object} and its older `guided_*`
fields, llama.cpp's `grammar` (GBNF) and `json_schema`. A request carries at most one.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from ..completion import ParamError
from ..sampling_params import Constraint

ANY_OBJECT = '{"type": "object"}'
STRUCTURED_KEYS = ("json", "regex", "choice", "grammar", "json_object")


def request_constraint(request) -> tuple[Constraint | None, str | None]:
    """The request's one output constraint and the field that asked for it; ParamError names a bad or second field."""
    found = [(field, constraint) for field, read in _READERS.items()
             if (constraint := read(getattr(request, field, None), field)) is not None]
    if len(found) > 1:
        names = ", ".join(field for field, _ in found)
        raise ParamError(f"a request takes at most one output constraint, got {names}", found[1][0])
    return (found[0][1], found[0][0]) if found else (None, None)


def _response_format(value: dict | None, field: str) -> Constraint | None:
    kind = (value or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint("json_schema", ANY_OBJECT)
    if kind != "json_schema":
        raise ParamError(f"{field} type must be 'text', 'json_object' or 'json_schema', got {kind!r}", field)
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise ParamError(f"{field} needs json_schema: {{\"name\": ..., \"schema\": {{...}}}}", field)
    return _json(spec.get("schema", {"type": "object"}), field)


def _structured_outputs(value: dict | None, field: str) -> Constraint | None:
    """vLLM's structured_outputs: exactly one of its kinds (options such as whitespace_pattern are ignored)."""
    if not value:
        return None
    if not isinstance(value, dict):
        raise ParamError(f"{field} must be an object such as {{\"json\": {{...}}}}", field)
    if value.get("structural_tag") is not None:
        raise ParamError(f"{field}.structural_tag is not supported; use json, regex, choice or grammar", field)
    kinds = [k for k in STRUCTURED_KEYS if value.get(k) not in (None, False)]
    if len(kinds) != 1:
        raise ParamError(f"{field} takes exactly one of {', '.join(STRUCTURED_KEYS)}, got {kinds or 'none'}", field)
    kind = kinds[0]
    if kind == "json_object":
        return Constraint("json_schema", ANY_OBJECT)
    return _KINDS[kind](value[kind], field)


def _json(schema, field: str) -> Constraint | None:
    """A JSON schema given as an object or as its JSON text."""
    if schema is None:
        return None
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise ParamError(f"{field} is not valid JSON: {exc}", field) from exc
    if not isinstance(schema, dict):
        raise ParamError(f"{field} must be a JSON schema object", field)
    return Constraint("json_schema", json.dumps(schema))


def _regex(pattern, field: str) -> Constraint | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str) or not pattern:
        raise ParamError(f"{field} must be a non-empty regular expression", field)
    return Constraint("regex", pattern)


def _choice(choices, field: str) -> Constraint | None:
    if choices is None:
        return None
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise ParamError(f"{field} must be a non-empty list of non-empty strings", field)
    return Constraint("choice", tuple(choices))


def _grammar(text, field: str) -> Constraint | None:
    """A context-free grammar: GBNF (llama.cpp's, and vLLM's xgrammar EBNF) when it has `::=`, else Lark."""
    if text is None:
        return None
    if not isinstance(text, str) or not text.strip():
        raise ParamError(f"{field} must be grammar text (GBNF or Lark)", field)
    return Constraint("gbnf" if "::=" in text else "lark", text)


_KINDS: dict[str, Callable] = {"json": _json, "regex": _regex, "choice": _choice, "grammar": _grammar}
_READERS: dict[str, Callable] = {
    "response_format": _response_format, "structured_outputs": _structured_outputs,
    "guided_json": _json, "guided_regex": _regex, "guided_choice": _choice, "guided_grammar": _grammar,
    "grammar": _grammar, "json_schema": _json,
}
