"""Self-consistency votes that stop early (Adaptive-Consistency, Aggarwal et al., 2023) and votes weighted
by each path's probability (the normalized weighted sum of Wang et al., 2023).

Paths are sampled in rounds; after each round a stopping rule reads the tally:
- `overtake`: stop when the leader's margin is larger than all the unsampled paths could add to any
  other answer. The whole budget would elect the same answer, so accuracy cannot change.
- `beta`: stop when P(p_leader > p_runner_up) under a Beta(v1 + 1, v2 + 1) posterior over the two
  leading answers' shares reaches `confidence` (the paper's Beta criterion): cheaper, but it can
  rarely stop on an answer the whole budget would not have picked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .answers import vote_totals
from .trace import Step

STOP_RULES = ("overtake", "beta")


@dataclass(frozen=True)
class VotePlan:
    """How many paths at most, how many per round, when to stop, and whether votes are weighted."""

    budget: int
    round_size: int = 2
    stop: str | None = "overtake"  # one of STOP_RULES; None: sample the whole budget (weighted votes alone)
    weighted: bool = False
    confidence: float = 0.95  # the beta rule's threshold

    def __post_init__(self):
        if self.stop is not None and self.stop not in STOP_RULES:
            raise ValueError(f"unknown stopping rule {self.stop!r}; choose one of {', '.join(STOP_RULES)}")
        if self.budget < 1 or self.round_size < 1:
            raise ValueError("a vote needs a budget and a round size of at least 1 path")

    def next_round(self, sampled: int) -> int:
        """How many paths to sample next (0: the budget is spent)."""
        return max(0, min(self.round_size, self.budget - sampled))

    def settled(self, answers: list[str | None], steps: list[Step]) -> bool:
        """Whether sampling can stop: the budget is spent, or the rule says the vote is decided."""
        remaining = self.budget - len(steps)
        if remaining <= 0:
            return True
        totals = sorted(vote_totals(answers, self.weights(steps)).values(), reverse=True)
        if self.stop is None or not totals:
            return False
        leader, runner_up = totals[0], (totals[1] if len(totals) > 1 else 0.0)
        if self.stop == "overtake":
            return leader - runner_up > remaining  # a path's weight is at most 1, so this bound holds weighted too
        return beta_confidence(leader, runner_up) >= self.confidence

    def weights(self, steps: list[Step]) -> list[float]:
        """Each path's vote: 1, or its length-normalized probability when weighted."""
        return [path_weight(s) if self.weighted else 1.0 for s in steps]


def path_weight(step: Step) -> float:
    """exp(mean token log-probability) of a sampled path, in (0, 1]: long paths are not penalised for length.

    A backend that reports no log-probability gives every path the weight 1 (a plain vote)."""
    logprob = float(step.meta.get("cumulative_logprob") or 0.0)
    return math.exp(min(0.0, logprob) / max(step.completion_tokens, 1))


def beta_confidence(leader: float, runner_up: float) -> float:
    """P(p1 > p2) for (p1, p2) ~ Beta(leader + 1, runner_up + 1): 1 - I_0.5(leader + 1, runner_up + 1)."""
    from scipy.special import betainc  # the regularized incomplete beta; vote totals may be fractional

    return float(1.0 - betainc(leader + 1.0, runner_up + 1.0, 0.5))


def weighted_winner(answers: list[str | None], weights: list[float], logprobs: list[float]) -> str | None:
    """The answer with the largest summed weight; a tie goes to the higher summed log-probability."""
    totals, mass = vote_totals(answers, weights), vote_totals(answers, logprobs)
    return max(totals, key=lambda a: (totals[a], mass[a]), default=None)


def paths_needed(plan: VotePlan, answers: list[str | None], steps: list[Step]) -> int:
    """How many of these paths, in the order they were sampled, `plan` would have sampled before stopping."""
    sampled = 0
    while not plan.settled(answers[:sampled], steps[:sampled]):
        sampled += plan.next_round(sampled)
    return sampled
