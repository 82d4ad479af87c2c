"""Replay and branch on our engine (a tiny random model): a replay in deterministic mode is identical token
for token, and a branch's first model call reads the parent's prompt from the prefix cache."""
import pytest

from app.backends import engine_chat_model
from app.fork import branch, replay
from app.run_diff import diff_runs
from app.runner import StrategyOptions, record_run
from app.store import Store
from engine import load_model
from prompts.template import load_shipped


@pytest.fixture(scope="module")
def engine(tiny_model):
    engine = load_model(tiny_model, device="cpu", deterministic=True)
    yield engine
    engine.close()


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "reason.db")
    yield store
    store.close()


def chat(engine, **sampling):
    return engine_chat_model(engine, {"max_tokens": 12, **sampling}, fingerprint="tiny", logprobs=3)


@pytest.mark.parametrize("k", [1, 3])
def test_a_deterministic_replay_is_identical_token_for_token(engine, store, k):
    model, info = chat(engine, temperature=0.9, seed=11)  # sampled: the seed and the batch-invariance both matter
    parent = record_run(store, "Tom has 3 apples and buys 4 more. How many?", "cot", model, info, load_shipped("cot"),
                        StrategyOptions(self_consistency=k))
    model, info = chat(engine, temperature=0.9, seed=11)
    again = store.get_run(replay(store, parent.run_id, model, info).run_id)
    assert again["lineage"]["kind"] == "replay" and again["lineage"]["deterministic"] is True
    assert again["lineage"]["identical"] is True and again["lineage"]["first_divergence"] is None
    original = store.get_run(parent.run_id)
    for a, b in zip(original["steps"], again["steps"], strict=True):
        assert a["meta"].get("logprobs") == b["meta"].get("logprobs")  # the same tokens, with the same probabilities
    assert again["answer"] == original["answer"] and again["parent_run_id"] == parent.run_id


def test_a_replay_with_other_sampling_says_where_it_parted(engine, store):
    model, info = chat(engine, temperature=0.9, seed=11)
    parent = record_run(store, "What is 12 times 3?", "direct", model, info, load_shipped("direct"))
    model, info = chat(engine, temperature=0.9, seed=12)
    lineage = store.get_run(replay(store, parent.run_id, model, info).run_id)["lineage"]
    assert lineage["changed"] == {"sampling": {"seed": 12}}
    assert lineage["identical"] is False and lineage["first_divergence"]["step"] == 0


def test_a_branch_reuses_the_parents_prompt_from_the_prefix_cache(engine, store):
    model, info = chat(engine)
    parent = store.get_run(record_run(store, "Sam has 5 pens and loses 2. How many are left?", "cot", model, info,
                                      load_shipped("cot")).run_id)
    step = parent["steps"][0]
    # an alternative whose text differs from the chosen token's (two byte tokens can both read '�')
    token, alternative = next((i, alt) for i, (text, _, alts) in enumerate(step["meta"]["logprobs"])
                              for alt, _ in alts[1:] if alt != text)
    child = store.get_run(branch(store, parent["id"], 0, token, alternative, model, info).run_id)
    first = child["steps"][0]
    assert first["meta"]["cached_prompt_tokens"] > 0  # the shared prompt prefix was not computed again
    assert first["meta"]["cached_prompt_tokens"] <= first["prompt_tokens"]
    assert first["output"].startswith("".join(t for t, _, _ in step["meta"]["logprobs"][:token]) + alternative)
    assert diff_runs(parent, child)["first_divergence"] == {"step": 0, "part": "output", "token": token, "unit": "token"}
