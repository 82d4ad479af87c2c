"""ReAct (Yao et al., 2022): numbered Thought / Action / Observation steps over a Wikipedia tool.

Generation stops at "\nObservation"; the action (Search[entity], Lookup[keyword], Finish[answer])
is parsed and run, and its observation, truncated to a budget, is appended. A template may hold
each step to a grammar (its `step` constraint, numbered for the step), so that it always parses;
a step that does not parse is re-prompted, free, and counted (bad_calls); an action repeated with
the same argument is flagged. Without Finish after max_steps, CoT self-consistency can answer
instead (the paper's ReAct -> CoT-SC setting).
"""
from __future__ import annotations

import re
import time
from typing import Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage

from . import cot
from .llm_call import add_call, call_model
from .template import PromptTemplate, Turns, load_shipped
from .trace import RunInfo, Step, Trace

ACTION = re.compile(r"Action\s*\d*\s*:\s*(Search|Lookup|Finish)\s*\[(.*?)\]", re.IGNORECASE | re.DOTALL)
# an action that starts a line wins over one written inside the thought (a grammar-held step's
# own action is always on its line, after a thought that may mention one)
LINE_ACTION = re.compile(r"(?:^|\n)\s*" + ACTION.pattern, re.IGNORECASE | re.DOTALL)
THOUGHT = re.compile(r"^\s*(.*?)\s*(?:\n|Action\s*\d*\s*:|$)", re.DOTALL)
MAX_BAD_CALLS = 3


class Tool(Protocol):
    def search(self, entity: str) -> str: ...
    def lookup(self, keyword: str) -> str: ...


def parse_step(completion: str) -> tuple[str, str | None, str | None]:
    """(thought, action name, argument) from what follows "Thought i:"; no action -> (thought, None, None)."""
    match = LINE_ACTION.search(completion) or ACTION.search(completion)
    thought = THOUGHT.match(completion).group(1).strip()
    if not match:
        return thought, None, None
    return thought, match.group(1).capitalize(), match.group(2).strip()


def _observe(tool: Tool, action: str, argument: str, budget: int) -> str:
    text = tool.search(argument) if action == "Search" else tool.lookup(argument)
    return text if len(text) <= budget else text[:budget].rstrip() + " …"


class _Episode:
    """The growing scratchpad and the counters of one ReAct run."""

    def __init__(self, trace: Trace, tool: Tool, extra: dict):
        self.trace, self.tool = trace, tool
        self.budget, self.step_tokens = int(extra.get("observation_budget", 600)), int(extra.get("step_max_tokens", 160))
        self.fallback_name = extra.get("fallback_template")
        self.scratchpad, self.bad_calls, self.repeats = "", 0, 0
        self.seen: set[tuple[str, str]] = set()

    def act(self, i: int, thought: str, action: str, argument: str) -> None:
        key = (action, argument.lower())
        if key in self.seen:
            self.repeats += 1
            observation = f"You already ran {action}[{argument}]; try a different action or argument."
            self.trace.add(Step(kind="tool", name=action.lower(), input=argument, output=observation, meta={"repeated": True}))
        else:
            self.seen.add(key)
            step = self.trace.add(Step(kind="tool", name=action.lower(), input=argument))  # shown while it runs
            started = time.perf_counter()
            step.output = _observe(self.tool, action, argument, self.budget)
            step.duration_ms = (time.perf_counter() - started) * 1e3
            observation = step.output
        self.scratchpad += f"Thought {i}: {thought}\nAction {i}: {action}[{argument}]\nObservation {i}: {observation}\n"


def _next_step(model, messages, episode: _Episode, i: int, forced: str = "",
               constraint: dict | None = None) -> tuple[str, str | None, str | None]:
    prefix = episode.scratchpad + f"Thought {i}:" + forced
    step = add_call(episode.trace, call_model(model, [*messages, AIMessage(prefix)], f"step {i}", constraint=constraint,
                                              stop=[f"\nObservation {i}:", "\nObservation"], max_tokens=episode.step_tokens))
    thought, action, argument = parse_step(forced + step.output if forced else step.output)
    return thought, action, argument


def run(question: str, model: BaseChatModel, template: PromptTemplate, tool: Tool, info: RunInfo = RunInfo(),
        max_steps: int = 7, fallback_template: PromptTemplate | None = None, fallback_k: int = 5,
        history: Turns = ()) -> Trace:
    """The ReAct loop after `history`; `fallback_template` (a CoT template) answers by self-consistency
    when Finish never comes (the shipped one the ReAct template's `extra.fallback_template` names, if any)."""
    trace = info.new_trace(question, "react", template, history)
    messages = template.render(question, history)
    episode = _Episode(trace, tool, template.extra)
    for i in range(1, max_steps + 1):
        thought, action, argument = _next_step(model, messages, episode, i, constraint=template.constraint("step", step=i))
        while action is None and episode.bad_calls < MAX_BAD_CALLS:
            episode.bad_calls += 1
            trace.add(Step(kind="parse_error", name=f"step {i}", input=trace.steps[-1].output,
                           error="no Action i: Search[...] / Lookup[...] / Finish[...] found; re-prompting"))
            thought, action, argument = _next_step(model, messages, episode, i, forced=f" {thought}\nAction {i}:")
        if action is None:
            break
        if action == "Finish":
            return _finish(trace, episode, argument or None)
        episode.act(i, thought, action, argument)
    return _fallback(trace, episode, question, model, info, fallback_template, fallback_k, history)


def _finish(trace: Trace, episode: _Episode, answer: str | None) -> Trace:
    trace.counters.update(bad_calls=episode.bad_calls, repeated_actions=episode.repeats)
    return trace.finish(answer)


def _fallback(trace, episode, question, model, info, template, k, history) -> Trace:
    if template is None:
        return _finish(trace, episode, None)
    own = episode.fallback_name  # the ReAct template's own choice (a free ReAct falls back to free CoT) wins
    template = load_shipped(own) if own else template
    backup = cot.run(question, model, template, info, self_consistency=k, history=history)
    for step in backup.steps:
        step.meta["fallback"] = "cot-sc"
        trace.add(step)
    return _finish(trace, episode, backup.answer)
