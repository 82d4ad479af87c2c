"""Reasoning models: thinking split from the answer (streamed or whole), the tags a template uses,
and a token budget that closes the thinking block — in the scheduler, the engine and the server."""
import json

import httpx
import pytest

from engine import SamplingParams, load_model
from engine.reasoning import ReasoningSplitter, ReasoningTags, split_reasoning
from engine.request import RequestHandle
from engine.sampling_params import Constraint
from engine.serving.server import create_app
from tests.live_server import serve_in_thread

from .test_scheduler_plans import FakeRunner, run, scheduler, submit

TEXT = "<think>\nTom has 3 boxes of 4, so 12.\n</think>\n\nThe answer is 12."


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7])
def test_streamed_pieces_split_as_the_whole_text(cut):
    splitter, reasoning, answer = ReasoningSplitter(ReasoningTags()), [], []
    pieces = [TEXT[i:i + cut] for i in range(0, len(TEXT), cut)]
    for i, piece in enumerate(pieces):
        r, a = splitter.feed(piece, final=i == len(pieces) - 1)
        reasoning.append(r)
        answer.append(a)
    assert ("".join(reasoning), "".join(answer)) == split_reasoning(TEXT)
    assert split_reasoning(TEXT) == ("\nTom has 3 boxes of 4, so 12.\n", "The answer is 12.")


def test_a_prompt_that_opened_the_block_and_text_without_tags():
    assert split_reasoning("Let me think.</think>42", inside=True) == ("Let me think.", "42")
    assert split_reasoning("Just 42, no tags at all.") == ("", "Just 42, no tags at all.")
    assert split_reasoning("a <thin") == ("", "a <thin")  # a partial tag at the end is text
    assert split_reasoning("<think>never closed") == ("never closed", "")


def test_tags_come_from_the_chat_template():
    assert ReasoningTags.of_template("{{ '<|begin_of_thought|>' }}...{{ '<|end_of_thought|>' }}").close == \
        "<|end_of_thought|>"
    assert ReasoningTags.of_template(None) == ReasoningTags()
    tags = ReasoningTags()
    assert tags.open_at_end("<|im_start|>assistant\n<think>\n") and not tags.open_at_end("<think>x</think>\n")


# ---- the budget, without a model: tokens 50 and 51 are the tags, 7 is any other token
BYTES = {50: b"<think>", 51: b"</think>", 7: b"x"}


def budgeted_scheduler():
    s = scheduler()
    s.token_bytes = lambda t: BYTES.get(t, b"?")
    s.reasoning_close_ids = [51]
    return s


class ThinkingRunner(FakeRunner):
    """Opens a thinking block, then thinks forever; a forced token wins, as in the real runner."""

    def choose(self, row) -> int:
        return 50 if row.start + len(row.token_ids) == 3 else 7


def test_the_budget_closes_the_block_then_the_answer_follows():
    s = budgeted_scheduler()
    handle = submit(s, [1, 2, 3], max_tokens=9, max_reasoning_tokens=4)
    run(s, ThinkingRunner())
    assert handle.result(timeout=0)[0].token_ids == [50, 7, 7, 7, 7, 51, 7, 7, 7]


def test_a_block_opened_by_the_prompt_counts_from_the_first_token():
    s = budgeted_scheduler()
    handle = RequestHandle("r", [1, 2], SamplingParams(max_tokens=4, max_reasoning_tokens=0), s.cancel,
                           starts_in_reasoning=True)
    s.add(handle)
    run(s, FakeRunner(7))
    assert handle.result(timeout=0)[0].token_ids[0] == 51  # closed at once: a zero budget


# ---- the real engine and server on a tiny model
@pytest.fixture(scope="module")
def engine(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("Q4_0"), device="cpu", dtype="float32")
    yield model
    model.close()


def test_the_engine_closes_thinking_within_the_budget(engine):
    close = engine.tokenizer.encode("</think>", add_bos=False)
    no_eos = {engine.tokenizer.eos_id: -100.0}
    done = engine.generate(["Question: what is 2 + 2? <think>"],
                           SamplingParams(max_tokens=20, max_reasoning_tokens=5, logit_bias=no_eos))[0]
    assert done.token_ids[5:5 + len(close)] == close
    reasoning, answer = split_reasoning(done.text, inside=True)
    assert "</think>" not in answer and reasoning


def test_a_constraint_holds_the_answer_after_the_thinking_block(engine):
    no_eos = {engine.tokenizer.eos_id: -100.0}
    params = SamplingParams(max_tokens=30, max_reasoning_tokens=5, logit_bias=no_eos, temperature=1.0, seed=3,
                            constraint=Constraint("choice", ("yes", "no")))
    done = engine.generate(["Question: is 2 + 2 four? <think>"], params)[0]
    reasoning, answer = split_reasoning(done.text, inside=True)
    assert len(engine.tokenizer.encode(reasoning, add_bos=False)) >= 3  # thinking was free, not the grammar's
    assert answer in ("yes", "no") and done.finish_reason == "stop"


def test_the_server_returns_reasoning_content_whole_and_streamed(engine):
    no_eos = {str(engine.tokenizer.eos_id): -100}
    body = {"model": "tiny", "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>"}],
            "max_tokens": 16, "max_reasoning_tokens": 4, "logit_bias": no_eos, "temperature": 0}
    with serve_in_thread(create_app(engine, model_name="tiny")) as url:
        whole = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]
        raw = httpx.post(f"{url}/v1/chat/completions", json={**body, "reasoning_format": "none"},
                         timeout=60).json()["choices"][0]["message"]
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
            deltas = [json.loads(line[6:])["choices"][0]["delta"] for line in r.iter_lines()
                      if line.startswith("data: {")]
    assert whole["reasoning_content"] and "</think>" not in whole["content"]
    assert "</think>" in raw["content"] and "reasoning_content" not in raw
    streamed = "".join(d.get("reasoning_content", "") for d in deltas), "".join(d.get("content") or "" for d in deltas)
    assert streamed == (whole["reasoning_content"], whole["content"])
