"""Adaptive self-consistency replayed on a batch's stored paths: for each stopping rule, the paths and tokens it
would have used on the same samples and the accuracy it would have had, beside the whole budget's.

Paths are i.i.d. samples, so stopping after the first n stored paths is what an adaptive run drawing
those same n paths would have done (the evaluation of Aggarwal et al., 2023).
"""
from __future__ import annotations

from prompts.answers import extract_answer, majority_vote
from prompts.scoring import score
from prompts.trace import Step
from prompts.voting import STOP_RULES, VotePlan, paths_needed

from .experiments_compare import Side
from .store import Store


def replay(store: Store, side: Side, round_size: int = 2) -> dict:
    """{"questions", "budget", "full": …, RULE: …}: each with accuracy, paths and tokens (and savings for rules)."""
    runs = [store.get_run(run["run_id"]) for run in store.config_runs(side.batch_id, side.config).values()
            if run["expected"] is not None]
    samples = [s for s in (_paths(run) for run in runs) if s[1]]
    if not samples:
        raise ValueError(f"{side.label} has no scored self-consistency runs (reasoning paths) to replay")
    budget = max(len(steps) for _, steps in samples)
    out = {"questions": len(samples), "budget": budget, "full": _tally(samples, lambda answers, steps: len(steps))}
    for rule in STOP_RULES:
        plan = VotePlan(budget, round_size, rule)
        out[rule] = _tally(samples, lambda answers, steps, plan=plan: paths_needed(plan, answers, steps))
        out[rule]["tokens_saved"] = 1 - out[rule]["tokens"] / out["full"]["tokens"] if out["full"]["tokens"] else 0.0
        out[rule]["same_answers"] = sum(_winner(s, len(s[1])) == _winner(s, n)
                                        for s, n in zip(samples, out[rule].pop("used")))
    out["full"].pop("used")
    return out


def _paths(run: dict) -> tuple[str, list[Step]]:
    steps = [Step(kind=s["kind"], input="", output=s["output"], prompt_tokens=s["prompt_tokens"],
                  completion_tokens=s["completion_tokens"], meta=s["meta"] or {})
             for s in run["steps"] if s["kind"] == "llm" and s["name"].startswith("reasoning path")]
    return run["expected"], steps


def _winner(sample: tuple[str, list[Step]], n: int) -> str | None:
    steps = sample[1][:n]
    return majority_vote([extract_answer(s.output) for s in steps],
                         [float(s.meta.get("cumulative_logprob") or 0.0) for s in steps])[0]


def _tally(samples: list[tuple[str, list[Step]]], count) -> dict:
    used = [count([extract_answer(s.output) for s in steps], steps) for _, steps in samples]
    correct = sum(score(_winner(sample, n), sample[0]).correct for sample, n in zip(samples, used))
    tokens = sum(s.prompt_tokens + s.completion_tokens for (_, steps), n in zip(samples, used) for s in steps[:n])
    return {"accuracy": correct / len(samples), "correct": correct, "paths": sum(used), "tokens": tokens, "used": used}
