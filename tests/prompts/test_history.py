"""A follow-up question carries the conversation: every strategy sends the earlier turns before it."""
import time

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from prompts import cot, direct, pal, react
from prompts.llm_call import sample_model, token_logprobs
from prompts.template import load_shipped
from prompts.trace import RunInfo

from .scripted import ScriptedChatModel

INFO = RunInfo(model_id="scripted", backend="test")
FIRST = "Tom has 3 boxes of 4 pencils and gives away 5. How many are left?"
FOLLOW_UP = "And if he then gives away 2 more?"
HISTORY = [(FIRST, "7")]


class NoWiki:
    def search(self, entity):
        return "nothing"

    def lookup(self, keyword):
        return "nothing"


def run(strategy: str, model):
    template = load_shipped(strategy)
    if strategy == "react":
        return react.run(FOLLOW_UP, model, template, NoWiki(), INFO, history=HISTORY)
    return {"direct": direct, "cot": cot, "pal": pal}[strategy].run(FOLLOW_UP, model, template, INFO, history=HISTORY)


REPLIES = {"direct": "5", "cot": "7 - 2 = 5. The answer is 5.", "pal": "\n    return 7 - 2\n",
           "react": " He had 7 and gives 2.\nAction 1: Finish[5]"}


@pytest.mark.parametrize("strategy", ["direct", "cot", "pal", "react"])
def test_every_strategy_sends_the_earlier_turns_between_the_exemplars_and_the_question(strategy):
    model = ScriptedChatModel().enqueue(REPLIES[strategy])
    trace = run(strategy, model)
    assert trace.answer == "5" and trace.counters["earlier_turns"] == 1
    messages = model.calls[0]["messages"]
    asked = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage) and FOLLOW_UP in m.content]
    earlier = [i for i, m in enumerate(messages) if isinstance(m, HumanMessage) and FIRST in m.content]
    assert len(asked) == len(earlier) == 1 and earlier[0] + 2 == asked[0]
    assert isinstance(messages[earlier[0] + 1], AIMessage) and messages[earlier[0] + 1].content == "7"
    exemplars = len(load_shipped(strategy).examples) * 2 + (1 if load_shipped(strategy).system.strip() else 0)
    assert earlier[0] == exemplars  # after the few-shot exemplars
    assert FIRST in trace.steps[0].input  # the trace shows the prompt with the earlier turn


def test_without_history_the_prompt_is_as_before():
    template = load_shipped("cot")
    assert template.render("2+2?") == template.render("2+2?", history=())
    trace = cot.run("2+2?", ScriptedChatModel().enqueue("The answer is 4."), template, INFO)
    assert "earlier_turns" not in trace.counters


def test_the_earlier_question_is_worded_as_the_user_turn():
    template = load_shipped("direct")
    messages = template.render(FOLLOW_UP, history=HISTORY)
    assert messages[-3].content == template.user.format(question=FIRST)


class SlowFirst(ScriptedChatModel):
    """The call that gets the reply "slow" takes longer than the others."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        result = super()._generate(messages, stop, run_manager, **kwargs)
        if result.generations[0].message.content == "slow":
            time.sleep(0.3)  # a long reasoning path, not synchronisation
        return result


def test_sampled_paths_start_together_and_each_keeps_its_own_time():
    model = ScriptedChatModel().enqueue("The answer is 1.", "The answer is 2.")
    steps = sample_model(model, [HumanMessage("?")], 2, "path")
    assert steps[0].meta["started_at"] == steps[1].meta["started_at"]
    model = SlowFirst().enqueue("slow", "fast", "fast")
    steps = sample_model(model, [HumanMessage("?")], 3, "path")
    slow = [s.duration_ms for s in steps if s.output == "slow"]
    fast = [s.duration_ms for s in steps if s.output == "fast"]
    assert slow[0] >= 300 and max(fast) < 250


def test_token_logprobs_are_kept_compactly():
    message = AIMessage("Hi", response_metadata={"logprobs": {"content": [
        {"token": "Hi", "logprob": -0.12345, "top_logprobs": [{"token": "Hi", "logprob": -0.12345},
                                                              {"token": "Hello", "logprob": -2.5}]}]}})
    assert token_logprobs(message) == [["Hi", -0.1235, [["Hi", -0.1235], ["Hello", -2.5]]]]
    assert token_logprobs(AIMessage("Hi")) is None
