"""Prompt templates as data: one YAML file per strategy under prompts/templates/, loaded as LangChain messages.

A template has a name, a version, a system message, few-shot exemplars (user/assistant pairs),
a user turn with a `{question}` slot and an optional assistant prefix the model continues from.
A conversation's earlier turns go between the exemplars and the new question, each question in
the user turn's wording, so a follow-up is read in its context. A template may constrain the
output of each model call its strategy makes (`constraints:`, see `MODEL_CALLS`).
"""
from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files

import yaml
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

REQUIRED_SLOTS = {"question"}
# The model calls each strategy makes, by the name a template's `constraints:` gives them.
MODEL_CALLS = {"direct": ("answer",), "cot": ("reasoning",), "pal": ("program",), "react": ("step",)}
# What a backend can hold an output to: the engine's Constraint kinds (prompts/ cannot import engine/).
CONSTRAINT_KINDS = ("json_schema", "regex", "choice", "lark", "gbnf")
STEP_SLOT = "{step}"  # in a ReAct step's grammar: the number of the step being generated


class TemplateError(ValueError):
    pass


Turns = Sequence[tuple[str, str]]  # a conversation's earlier (question, answer) pairs, oldest first


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    strategy: str
    system: str
    user: str  # must contain {question}
    examples: tuple[tuple[str, str], ...] = ()  # (user turn, assistant turn) pairs
    assistant_prefix: str = ""  # the model continues from here (e.g. "def solution():")
    description: str = ""
    extra: dict = field(default_factory=dict)  # strategy-specific settings (e.g. ReAct's stop words)
    constraints: dict = field(default_factory=dict)  # model call -> {"kind", "spec"}: what its output must match

    def constraint(self, call: str, step: int | None = None) -> dict | None:
        """The output constraint of one model call as a neutral {"kind", "spec"} (None: free text);
        `step` fills the grammar's {step} slot."""
        found = self.constraints.get(call)
        if found is None:
            return None
        spec = found["spec"]
        if step is not None and isinstance(spec, str):
            spec = spec.replace(STEP_SLOT, str(step))
        return {"kind": found["kind"], "spec": spec}

    def render(self, question: str, history: Turns = ()) -> list[BaseMessage]:
        """Chat messages for a question after the conversation's earlier (question, answer) turns;
        a trailing AIMessage is a prefix to continue."""
        if not isinstance(question, str) or not question.strip():
            raise TemplateError("the question is empty")
        messages: list[BaseMessage] = [SystemMessage(self.system)] if self.system.strip() else []
        for user, assistant in self.examples:
            messages += [HumanMessage(user), AIMessage(assistant)]
        for earlier, answer in history:
            messages += [HumanMessage(_fill(self.user, question=earlier)), AIMessage(answer)]
        messages.append(HumanMessage(_fill(self.user, question=question)))
        if self.assistant_prefix:
            messages.append(AIMessage(self.assistant_prefix))
        return messages


def _slots(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise TemplateError(f"broken placeholder in {text[:40]!r}…: {exc}") from exc


def _fill(text: str, **values: str) -> str:
    return text.format(**values)


def parse_template(body: str, source: str = "template") -> PromptTemplate:
    """Validate a YAML template body; raise TemplateError with a clear message when it is not usable."""
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: expected a mapping with name, version, strategy, system, user")
    missing = [k for k in ("name", "version", "strategy", "user") if k not in data]
    if missing:
        raise TemplateError(f"{source}: missing field(s): {', '.join(missing)}")
    user = str(data["user"])
    slots = _slots(user)
    if not REQUIRED_SLOTS <= slots:
        raise TemplateError(f"{source}: the user turn must contain the placeholder {{question}}")
    if slots - REQUIRED_SLOTS:
        raise TemplateError(f"{source}: unknown placeholder(s) {sorted(slots - REQUIRED_SLOTS)}; only {{question}} is filled")
    examples = tuple((str(e["user"]), str(e["assistant"])) for e in data.get("examples") or () if _is_example(e, source))
    if isinstance(data["version"], bool) or not isinstance(data["version"], int):
        raise TemplateError(f"{source}: version must be a whole number, got {data['version']!r}")
    return PromptTemplate(name=str(data["name"]), version=data["version"], strategy=str(data["strategy"]),
                          system=str(data.get("system", "")), user=user, examples=examples,
                          assistant_prefix=str(data.get("assistant_prefix", "")),
                          description=str(data.get("description", "")), extra=dict(data.get("extra") or {}),
                          constraints=_constraints(data.get("constraints"), str(data["strategy"]), source))


def _is_example(example, source: str) -> bool:
    if not isinstance(example, dict) or "user" not in example or "assistant" not in example:
        raise TemplateError(f"{source}: every example needs 'user' and 'assistant'")
    return True


def _constraints(value, strategy: str, source: str) -> dict:
    """`constraints:` checked: each call the strategy makes -> {"kind", "spec"} (a JSON schema may be a mapping)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TemplateError(f"{source}: constraints must map a model call to {{kind, spec}}")
    calls = MODEL_CALLS.get(strategy, ())
    checked = {}
    for call, constraint in value.items():
        if call not in calls:
            raise TemplateError(f"{source}: strategy '{strategy}' makes no model call '{call}'; "
                                f"it can constrain: {', '.join(calls) or 'none'}")
        checked[call] = _constraint(constraint, f"{source}: constraints.{call}")
    return checked


def _constraint(value, where: str) -> dict:
    if not isinstance(value, dict) or set(value) != {"kind", "spec"}:
        raise TemplateError(f"{where} needs exactly 'kind' and 'spec'")
    kind, spec = value["kind"], value["spec"]
    if kind not in CONSTRAINT_KINDS:
        raise TemplateError(f"{where}: kind '{kind}' is not one of {', '.join(CONSTRAINT_KINDS)}")
    if kind == "json_schema" and isinstance(spec, dict):
        spec = json.dumps(spec)
    if kind == "choice":
        if not isinstance(spec, list) or not spec or not all(isinstance(c, str) for c in spec):
            raise TemplateError(f"{where}: a choice needs a non-empty list of strings")
        return {"kind": kind, "spec": list(spec)}
    if not isinstance(spec, str) or not spec.strip():
        raise TemplateError(f"{where}: the spec must be non-empty text")
    return {"kind": kind, "spec": spec}


def shipped_template_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in files("prompts.templates").iterdir() if p.name.endswith(".yaml"))


def shipped_template_body(name: str) -> str:
    """The YAML text of a template shipped with the package."""
    path = files("prompts.templates") / f"{name}.yaml"
    if not path.is_file():
        raise TemplateError(f"no template named '{name}'; shipped: {', '.join(shipped_template_names())}")
    return path.read_text(encoding="utf-8")


def load_shipped(name: str) -> PromptTemplate:
    """A template shipped with the package (version 1 of each)."""
    return parse_template(shipped_template_body(name), source=f"{name}.yaml")
