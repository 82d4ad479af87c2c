"""Direct prompting: ask, take the answer as given (first line; its number for numeric answers)."""
from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from .answers import extract_answer, first_line
from .llm_call import add_call, call_model
from .template import PromptTemplate, Turns
from .trace import RunInfo, Trace


def run(question: str, model: BaseChatModel, template: PromptTemplate, info: RunInfo = RunInfo(),
        history: Turns = ()) -> Trace:
    """One call; the answer is the reply's first line (or the number in it, when there is one).

    `history`: the conversation's earlier (question, answer) turns, sent before the question."""
    trace = info.new_trace(question, "direct", template, history)
    messages = template.render(question, history)
    step = add_call(trace, call_model(model, messages, "answer", stop=["\n\n"], constraint=template.constraint("answer")))
    line = first_line(step.output)
    return trace.finish(extract_answer(line) if line and any(c.isdigit() for c in line) else line)
