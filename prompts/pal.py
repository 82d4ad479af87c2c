"""Program-aided answering (Gao et al., 2022): the model writes solution(), the sandbox runs it.

On an exception the model may see the error and fix the program once (counted in the trace). A
template may hold each program to a grammar (its `program` constraint: indented lines ending in a
`return` line); the sandbox still checks the syntax.
Self-consistency samples k programs, runs each, and votes over the executed results; programs
that crash are discarded.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from .cot import vote
from .llm_call import add_call, call_model, sample_model
from .sandbox import SandboxResult, run_program
from .template import PromptTemplate, Turns
from .trace import RunInfo, Step, Trace

FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)
STOP = ["\n\n\n", "\n```\n"]
TOP_LEVEL_CODE = ("def ", "import ", "from ", "class ", "@", "#")
Sandbox = Callable[..., SandboxResult]  # runs one program: (source, timeout_s=…) -> SandboxResult


def extract_program(prefix: str, completion: str) -> str:
    """The solution() source from a completion that continues `prefix` or writes the whole function."""
    fenced = FENCE.search(completion)
    text = fenced.group(1) if fenced else completion
    text = text[text.index("def solution"):] if "def solution" in text else prefix + text
    kept = []
    for i, line in enumerate(text.split("\n")):
        if i and line.strip() and not line.startswith((" ", "\t")) and not line.startswith(TOP_LEVEL_CODE):
            break  # prose after the function
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n"


def normalize_value(value) -> str | None:
    """A comparable string for a program's return value (2.0 and 2 agree; floats rounded to 6 places)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float):
        value = round(value, 6)
        if value.is_integer():
            value = int(value)
    return str(value)


def _execute(trace: Trace, program: str, timeout_s: float, sandbox: Sandbox | None = None) -> tuple[str | None, str | None]:
    """Run in the sandbox, record a tool step; returns (answer, error)."""
    result = (sandbox or run_program)(program, timeout_s=timeout_s)
    output = json.dumps({"value": result.value, "stdout": result.stdout}, default=str)
    trace.add(Step(kind="tool", name="sandbox", input=program, output=output, duration_ms=result.duration_ms,
                   error=None if result.ok else result.error, meta={"kind": result.kind}))
    return (normalize_value(result.value), None) if result.ok else (None, result.error)


def _fix_messages(messages: list[BaseMessage], program: str, error: str, prefix: str) -> list[BaseMessage]:
    base = messages[:-1] if prefix else messages
    request = HumanMessage(f"Running that program failed with this error:\n{error}\nWrite the corrected solution() function.")
    return [*base, AIMessage(program), request, *([AIMessage(prefix)] if prefix else [])]


def run(question: str, model: BaseChatModel, template: PromptTemplate, info: RunInfo = RunInfo(),
        fix_errors: bool = True, self_consistency: int = 1, temperature: float = 0.7, timeout_s: float = 5.0,
        history: Turns = (), sandbox: Sandbox | None = None) -> Trace:
    """PAL with one greedy program (optionally fixed once), or a vote over sampled programs (after `history`);
    `sandbox` runs the programs (default: prompts.sandbox.run_program)."""
    trace = info.new_trace(question, "pal", template, history)
    messages, prefix = template.render(question, history), template.assistant_prefix
    constraint = template.constraint("program")  # the fix continues the same prefix, so it holds there too
    if self_consistency > 1:
        steps = sample_model(model, messages, self_consistency, "program", stop=STOP, constraint=constraint,
                             temperature=temperature)
        answers = []
        for step in steps:
            add_call(trace, step)
            answers.append(_execute(trace, extract_program(prefix, step.output), timeout_s, sandbox)[0])
        return trace.finish(vote(trace, answers, steps))
    first = add_call(trace, call_model(model, messages, "program", stop=STOP, constraint=constraint))
    program = extract_program(prefix, first.output)
    answer, error = _execute(trace, program, timeout_s, sandbox)
    if error and fix_errors:
        retry = call_model(model, _fix_messages(messages, program, error, prefix), "fix program", stop=STOP,
                           constraint=constraint)
        trace.counters["fix_attempts"] = 1
        answer, error = _execute(trace, extract_program(prefix, add_call(trace, retry).output), timeout_s, sandbox)
    return trace.finish(answer, error if answer is None and error else None)
