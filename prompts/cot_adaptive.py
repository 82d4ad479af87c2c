"""Chain-of-thought self-consistency in rounds, stopping once the vote is decided (prompts/voting.py).

The trace looks like plain self-consistency (numbered reasoning paths, then a vote) and says how
many paths of the budget were sampled (`counters.paths`, `counters.path_budget`).
"""
from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from .answers import extract_answer
from .cot import vote
from .llm_call import add_call, sample_model
from .template import PromptTemplate, Turns
from .trace import RunInfo, Step, Trace
from .voting import VotePlan, weighted_winner


def run(question: str, model: BaseChatModel, template: PromptTemplate, plan: VotePlan, info: RunInfo = RunInfo(),
        temperature: float = 0.7, history: Turns = ()) -> Trace:
    """Sample `plan.round_size` paths at a time until `plan` says the vote is settled, then vote."""
    trace = info.new_trace(question, "cot", template, history)
    messages, constraint = template.render(question, history), template.constraint("reasoning")  # as cot.run
    steps: list[Step] = []
    answers: list[str | None] = []
    while not plan.settled(answers, steps):
        for step in sample_model(model, messages, plan.next_round(len(steps)), "reasoning path", constraint=constraint,
                                 temperature=temperature):
            step.name = f"reasoning path {len(steps) + 1}/{plan.budget}"
            steps.append(add_call(trace, step))
            answers.append(extract_answer(step.output))
    trace.counters.update(paths=len(steps), path_budget=plan.budget)
    return trace.finish(_vote(trace, answers, steps, plan))


def _vote(trace: Trace, answers: list[str | None], steps: list[Step], plan: VotePlan) -> str | None:
    """The plain majority vote (so `overtake` elects what the whole budget would), or the weighted one."""
    winner = vote(trace, answers, steps)
    meta = trace.steps[-1].meta
    meta.update(stop_rule=plan.stop, paths=len(steps), path_budget=plan.budget)
    if plan.weighted:
        weights = plan.weights(steps)
        winner = weighted_winner(answers, weights, meta["logprobs"])
        meta["weights"] = [round(w, 4) for w in weights]
        trace.steps[-1].name, trace.steps[-1].output = "weighted vote", str(winner)
    return winner
