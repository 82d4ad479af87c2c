"""Grammar-constrained generation: every constraint kind holds on a random-weight model sampling at
temperature 1, mixed batches leave free rows untouched, and the mask works in both samplers."""
import json
import os
import re

import pytest
import torch

from engine import ParamError, SamplingParams, load_model
from engine.sampling import SamplerState, sample, unpack_bitmask
from engine.sampling_params import Constraint

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}},
          "required": ["name", "age"], "additionalProperties": False}
REGEX = r"Thought 1: [a-z ]{1,30}\nAction 1: (Search|Lookup|Finish)\[[a-z ]{1,20}\]"
LARK = 'start: "def solution():" ("\\n    x = " NUMBER)+ "\\n    return x"\nNUMBER: /[0-9]{1,3}/\n'
GBNF = 'root ::= "The answer is " [0-9]+ "."'
PROMPT = "Write the answer:"


@pytest.fixture(scope="module")
def engine(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("Q4_0"), device="cpu", dtype="float32")
    yield model
    model.close()


def hot(max_tokens=60, **kw):
    return SamplingParams(temperature=1.0, max_tokens=max_tokens, seed=7, **kw)


def texts(engine, constraint, n=4, **kw):
    return [c.text for c in engine.generate([PROMPT], hot(constraint=constraint, n=n, **kw))]


def test_json_schema_outputs_are_valid(engine):
    for text in texts(engine, Constraint("json_schema", json.dumps(SCHEMA)), max_tokens=120):
        value = json.loads(text)
        assert set(value) <= {"name", "age", "tags"} and {"name", "age"} <= set(value)
        assert isinstance(value["age"], int) and 0 <= value["age"] <= 120 and len(value["name"]) <= 12


def test_regex_choice_lark_and_gbnf_outputs_match(engine):
    for text in texts(engine, Constraint("regex", REGEX)):
        assert re.fullmatch(REGEX, text), text
    for text in texts(engine, Constraint("choice", ("yes", "no", "maybe not"))):
        assert text in ("yes", "no", "maybe not")
    for text in texts(engine, Constraint("lark", LARK), max_tokens=80):
        assert re.fullmatch(r"def solution\(\):(\n    x = [0-9]{1,3})+\n    return x", text), text
    for text in texts(engine, Constraint("gbnf", GBNF)):
        assert re.fullmatch(r"The answer is [0-9]+\.", text), text


def test_a_constrained_row_beside_free_rows_leaves_them_unchanged(engine):
    free = SamplingParams(max_tokens=12)
    alone = engine.generate(["The quick brown fox", "Paris is"], free)
    mixed = engine.generate(["The quick brown fox", "Question?", "Paris is"],
                            [free, SamplingParams(max_tokens=12, constraint=Constraint("choice", ("yes", "no"))), free])
    assert [mixed[0].token_ids, mixed[2].token_ids] == [c.token_ids for c in alone]
    assert mixed[1].text in ("yes", "no") and mixed[1].finish_reason == "stop"


def test_streaming_and_stop_strings_work_under_a_constraint(engine):
    handle = engine.submit(PROMPT, hot(constraint=Constraint("regex", REGEX)))
    events = list(handle)
    assert "".join(e.text for e in events) == handle.result()[0].text
    stopped = engine.generate([PROMPT], hot(constraint=Constraint("regex", REGEX), stop=["Action"]))[0]
    assert stopped.text.startswith("Thought 1:") and "Action" not in stopped.text


def test_bad_constraints_are_clear_errors(engine):
    for bad in (Constraint("regex", "(unclosed"), Constraint("json_schema", '{"type": "nonsense"}'),
                Constraint("lark", "start: ???")):
        with pytest.raises(ParamError, match="constraint"):
            engine.submit(PROMPT, SamplingParams(constraint=bad))
    with pytest.raises(ParamError, match="kind"):
        Constraint("xml", "<a/>")
    with pytest.raises(ParamError, match="beam"):
        engine.generate([PROMPT], SamplingParams(num_beams=2, constraint=Constraint("choice", ("a", "b"))))


LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, 3.0, 0.2, 0.1]] * 2)
ALLOWED = torch.tensor([[1, 0, 1, 0, 1, 0, 0, 1], [1] * 8], dtype=torch.bool)


def packed(allowed: torch.Tensor) -> torch.Tensor:
    words = torch.zeros(allowed.shape[0], 1, dtype=torch.int64)
    for j in range(allowed.shape[1]):
        words[:, 0] |= allowed[:, j].long() << j
    return words.to(torch.int32)


def test_the_bitmask_round_trips():
    assert torch.equal(unpack_bitmask(packed(ALLOWED), 8), ALLOWED)


@pytest.mark.parametrize("use_triton", [False, True])
def test_samplers_draw_only_allowed_tokens_with_the_renormalised_distribution(use_triton):
    if use_triton:
        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")
        pytest.importorskip("triton")
    from .sampling_checks import chi_square_p_value  # noqa: PLC0415

    params = SamplingParams(temperature=1.0)
    draws = 2000 if not use_triton else 600
    counts = torch.zeros(8, dtype=torch.float64)
    states = [SamplerState.start(params, [], seed=3), SamplerState.start(params, [], seed=4)]
    for _ in range(draws):
        tokens = sample(LOGITS.clone(), states, use_triton=use_triton, bitmask=packed(ALLOWED))
        counts[int(tokens[0])] += 1
    assert counts[~ALLOWED[0]].sum() == 0
    expected = torch.softmax(LOGITS[0].masked_fill(~ALLOWED[0], float("-inf")).double(), -1)
    assert chi_square_p_value(counts, expected) > 1e-3
    greedy = sample(LOGITS.clone(), [SamplerState.start(SamplingParams(), [], 0)] * 2, use_triton=use_triton,
                    bitmask=packed(ALLOWED))
    assert greedy.tolist() == [0, 5]  # the best allowed token; the free row keeps its argmax


KINDS = [(Constraint("json_schema", json.dumps(SCHEMA)), lambda t: set(json.loads(t)) >= {"name", "age"}),
         (Constraint("regex", REGEX), lambda t: re.fullmatch(REGEX, t)),
         (Constraint("choice", ("yes", "no", "maybe not")), lambda t: t in ("yes", "no", "maybe not")),
         (Constraint("lark", LARK), lambda t: re.fullmatch(r"def solution\(\):(\n    x = [0-9]{1,3})+\n    return x", t)),
         (Constraint("gbnf", GBNF), lambda t: re.fullmatch(r"The answer is [0-9]+\.", t))]


@pytest.mark.parametrize("use_triton", [False, True])
def test_every_kind_holds_in_both_samplers_in_one_mixed_batch(engine, use_triton):
    """The model's real masks (one row per kind, then a free row) through each sampler, from random
    logits at temperature 1: every constrained row ends inside its grammar, the free row is untouched."""
    if use_triton:
        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")
        pytest.importorskip("triton")
    from engine.grammar import MaskWorker  # noqa: PLC0415

    vocab, eos = engine.args.vocab_size, engine.tokenizer.eos_id
    matchers = [engine.constraints.matcher(c) for c, _ in KINDS]
    states = [SamplerState.start(SamplingParams(temperature=1.0), [], seed=i) for i in range(len(KINDS) + 1)]
    outputs, done, free_logits = [[] for _ in states], [False] * len(KINDS), []
    generator, worker = torch.Generator().manual_seed(0), MaskWorker()
    for _ in range(120):
        if all(done):
            break
        masks = worker.start(matchers, vocab).result()
        bitmask = torch.cat([masks, torch.full((1, masks.shape[1]), -1, dtype=torch.int32)])
        logits = torch.randn(len(states), vocab, generator=generator)
        free_logits.append(logits[-1:].clone())
        tokens = sample(logits, states, use_triton=use_triton, bitmask=bitmask)
        for row, token in enumerate(tokens.tolist()):
            if row < len(KINDS) and (done[row] or token == eos):
                done[row] = True
                continue
            outputs[row].append(token)
            if row < len(KINDS):
                assert matchers[row].consume_token(token), (KINDS[row][0].kind, matchers[row].get_error())
                done[row] = matchers[row].is_stopped()
    assert all(done)
    for (constraint, matches), ids in zip(KINDS, outputs):
        text = engine.tokenizer.decode(ids)
        assert matches(text), (constraint.kind, text)
    alone = [SamplerState.start(SamplingParams(temperature=1.0), [], seed=len(KINDS))]
    free = [int(sample(row, alone, use_triton=use_triton)[0]) for row in free_logits]
    assert outputs[-1] == free  # the free row drew what it draws alone, with no mask


def test_speculative_requests_with_a_constraint_hold_it_and_draft_nothing(engine):
    """Prompt-lookup drafts are skipped for constrained rows (the mask is per sampled position); the
    same repetitive prompt drafts when free."""
    prompt, words = "one two three one two three one two three one two", "( ?(one|two|three)){1,5}"
    before = engine.stats()["drafted_tokens"]
    engine.generate([prompt], SamplingParams(max_tokens=40, draft_tokens=4))
    free = engine.stats()["drafted_tokens"]
    assert free > before
    out = engine.generate([prompt], SamplingParams(max_tokens=40, draft_tokens=4, constraint=Constraint("regex", words)))
    assert re.fullmatch(words, out[0].text), out[0].text
    hot_out = texts(engine, Constraint("regex", REGEX), draft_tokens=4)
    assert all(re.fullmatch(REGEX, t) for t in hot_out), hot_out
    assert engine.stats()["drafted_tokens"] == free


def test_compiled_grammars_are_cached_by_their_text(engine, monkeypatch):
    import engine.grammar as grammar  # noqa: PLC0415

    constraint, calls = Constraint("regex", "[a-c]{2,5} cached"), []
    real = grammar.grammar_of
    monkeypatch.setattr(grammar, "grammar_of", lambda c: calls.append(c) or real(c))
    for _ in range(3):
        engine.constraints.matcher(Constraint("regex", "[a-c]{2,5} cached"))
    assert calls == [constraint]
