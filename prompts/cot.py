"""Chain-of-thought (Wei et al., 2022), optionally with self-consistency (Wang et al., 2023).

The answer is the last "The answer is N." phrase, else the last number; a template may hold the
reasoning to a grammar that ends with that phrase (its `reasoning` constraint). Self-consistency draws
k reasoning paths at temperature > 0 and takes the majority answer; ties go to the answer
whose paths have the highest summed log-probability.
"""
from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from .answers import extract_answer, majority_vote, vote_mass
from .llm_call import add_call, call_model, sample_model
from .template import PromptTemplate, Turns
from .trace import RunInfo, Step, Trace


def run(question: str, model: BaseChatModel, template: PromptTemplate, info: RunInfo = RunInfo(),
        self_consistency: int = 1, temperature: float = 0.7, history: Turns = ()) -> Trace:
    """CoT with one greedy path, or majority vote over `self_consistency` sampled paths (after `history`)."""
    trace = info.new_trace(question, "cot", template, history)
    messages, constraint = template.render(question, history), template.constraint("reasoning")
    if self_consistency <= 1:
        step = add_call(trace, call_model(model, messages, "reasoning", constraint=constraint))
        return trace.finish(extract_answer(step.output))
    steps = sample_model(model, messages, self_consistency, "reasoning path", constraint=constraint,
                         temperature=temperature)
    for step in steps:
        add_call(trace, step)
    return trace.finish(vote(trace, [extract_answer(s.output) for s in steps], steps))


def vote(trace: Trace, answers: list[str | None], steps: list[Step]) -> str | None:
    """Majority answer over samples, recorded as a `vote` step (with each answer's summed log-probability,
    which decides a tie)."""
    logprobs = [float(s.meta.get("cumulative_logprob", 0.0)) for s in steps]
    winner, counts = majority_vote(answers, logprobs)
    trace.add(Step(kind="vote", name="majority vote", input=repr(answers), output=str(winner),
                   meta={"counts": counts, "logprobs": logprobs, "mass": vote_mass(answers, logprobs)}))
    return winner
