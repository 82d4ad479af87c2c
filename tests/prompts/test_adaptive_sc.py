"""Adaptive self-consistency: it stops early on a scripted model, never changes the overtake vote, weights votes."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.runner import StrategyOptions, run_question
from prompts import cot_adaptive
from prompts.answers import majority_vote
from prompts.template import load_shipped
from prompts.trace import RunInfo, Step
from prompts.voting import VotePlan, beta_confidence, path_weight
from tests.prompts.scripted import ScriptedChatModel

SAME = "Tom has 3 and buys 2. The answer is 5."


def paths(trace) -> list[Step]:
    return [s for s in trace.steps if s.kind == "llm"]


def test_overtake_stops_once_the_leader_cannot_be_caught():
    model = ScriptedChatModel().enqueue(*[SAME] * 8)
    trace = cot_adaptive.run("Q?", model, load_shipped("cot"), VotePlan(8, round_size=2, stop="overtake"))
    # after 6 agreeing paths the 2 left cannot catch up (6 - 0 > 2); after 4 they could (4 - 0 = 4)
    assert trace.answer == "5" and len(model.calls) == 6 and len(paths(trace)) == 6
    assert trace.counters == {"paths": 6, "path_budget": 8}
    vote = trace.steps[-1]
    assert vote.kind == "vote" and vote.meta["counts"] == {"5": 6} and vote.meta["stop_rule"] == "overtake"
    assert [s.name for s in paths(trace)] == [f"reasoning path {i}/8" for i in range(1, 7)]
    assert all(call["kwargs"].get("constraint") == load_shipped("cot").constraint("reasoning") for call in model.calls)


def test_the_beta_rule_stops_sooner():
    model = ScriptedChatModel().enqueue(*[SAME] * 8)
    trace = cot_adaptive.run("Q?", model, load_shipped("cot"), VotePlan(8, round_size=2, stop="beta"))
    assert trace.answer == "5" and len(model.calls) == 4  # P(p1 > p2 | 4 to 0) = 1 - 2**-5 = 0.969 >= 0.95


def test_a_split_vote_uses_the_whole_budget():
    model = ScriptedChatModel().enqueue(*["The answer is 5.", "The answer is 7."] * 4)
    trace = cot_adaptive.run("Q?", model, load_shipped("cot"), VotePlan(8, round_size=2, stop="beta"))
    assert len(model.calls) == 8 and trace.counters["paths"] == 8 and trace.steps[-1].meta["counts"] == {"5": 4, "7": 4}


def test_paths_without_an_answer_are_no_votes():
    model = ScriptedChatModel().enqueue(*["I am not sure."] * 4)
    trace = cot_adaptive.run("Q?", model, load_shipped("cot"), VotePlan(4, round_size=3, stop="overtake"))
    assert trace.answer is None and len(model.calls) == 4  # rounds of 3, then the 1 left of the budget


def test_weighted_votes_prefer_the_probable_paths():
    unlikely, likely = ("The answer is 5.", -40.0), ("The answer is 7.", -0.2)
    model = ScriptedChatModel().enqueue(unlikely, unlikely, likely)
    trace = cot_adaptive.run("Q?", model, load_shipped("cot"), VotePlan(3, round_size=3, stop=None, weighted=True))
    vote = trace.steps[-1]
    assert trace.answer == "7" and vote.name == "weighted vote" and vote.meta["counts"] == {"5": 2, "7": 1}
    assert sorted(vote.meta["weights"]) == pytest.approx([0.0, 0.0, 0.951], abs=1e-3)  # exp(-40 / 4), exp(-0.2 / 4)


def test_path_weight_is_the_length_normalised_probability():
    step = Step(kind="llm", input="", completion_tokens=4, meta={"cumulative_logprob": -2.0})
    assert path_weight(step) == pytest.approx(0.6065306597)  # exp(-2 / 4)
    assert path_weight(Step(kind="llm", input="")) == 1.0  # a backend without log-probabilities: a plain vote


def test_beta_confidence_by_hand():
    assert beta_confidence(4, 0) == pytest.approx(1 - 2 ** -5)  # P(Bin(5, 1/2) <= 4)
    assert beta_confidence(3, 1) == pytest.approx(26 / 32)  # P(Bin(5, 1/2) <= 3)
    assert beta_confidence(2, 2) == pytest.approx(0.5)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1, max_size=12), st.integers(1, 4))
def test_overtake_elects_what_the_whole_budget_would(answers, round_size):
    plan = VotePlan(len(answers), round_size=round_size, stop="overtake")
    steps = [Step(kind="llm", input="", meta={"cumulative_logprob": -float(i)}) for i in range(len(answers))]
    n = 0
    while not plan.settled(answers[:n], steps[:n]):
        n += plan.next_round(n)
    logprobs = [-float(i) for i in range(len(answers))]
    assert majority_vote(answers[:n], logprobs[:n])[0] == majority_vote(answers, logprobs)[0]


def test_the_runner_picks_the_adaptive_vote_from_the_options():
    model = ScriptedChatModel().enqueue(*[SAME] * 8)
    options = StrategyOptions(self_consistency=8, sc_stop="beta")
    trace = run_question("cot", "Q?", model, RunInfo(), options=options)
    assert trace.answer == "5" and trace.counters["paths"] == 4
    assert StrategyOptions(self_consistency=8).vote_plan() is None  # plain self-consistency stays as it was
    with pytest.raises(ValueError, match="unknown stopping rule"):
        VotePlan(8, stop="soon")
