"""Beam search: deterministic, num_beams=1 is greedy, and it finds what greedy misses."""
import math
from types import SimpleNamespace

import pytest
import torch

from engine import SamplingParams, load_model
from engine.beam_search import beam_search
from engine.kv_pool import BlockPool

BOS, A, B, C, D, EOS = 0, 1, 2, 3, 4, 5
VOCAB = 6
# Next-token probabilities by last token: greedy takes A (0.6), then the best after A is only 0.3;
# the beam through B (0.4) then C (0.95) is far more probable overall.
TRANSITIONS = {BOS: {A: 0.6, B: 0.4}, A: {C: 0.3, D: 0.3, EOS: 0.4 - 1e-3, B: 1e-3}, B: {C: 0.95, D: 0.05},
               C: {EOS: 1.0}, D: {EOS: 1.0}, EOS: {EOS: 1.0}}


class MarkovModel(torch.nn.Module):
    """A stand-in for Transformer whose next-token distribution depends on the last token only."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self):
        super().__init__()
        self.args = SimpleNamespace(max_seq_len=32, n_layers=1, n_heads=1, n_kv_heads=1, head_dim=1, sliding_window=0)
        table = torch.full((VOCAB, VOCAB), -1e9)
        for prev, nxt in TRANSITIONS.items():
            for token, p in nxt.items():
                table[prev, token] = math.log(p)
        self.table = table

    def forward(self, tokens, positions, paged, logits_at=None):
        logits = self.table[tokens]  # (B, T, V)
        return logits if logits_at is None else logits[logits_at]


class ToyTokenizer:
    eos_id = EOS

    def token_bytes(self, token_id):
        return "_ABCD!"[token_id].encode()


def run(num_beams, n=1, length_penalty=0.0):
    params = SamplingParams(num_beams=num_beams, n=n, max_tokens=5, length_penalty=length_penalty)
    pool = BlockPool(1, 16, 4, 1, 1, torch.float32, torch.device("cpu"))
    return beam_search(MarkovModel(), pool, ToyTokenizer(), [BOS], params)


def test_beam_search_beats_greedy_in_total_log_probability():
    greedy, beam = run(1)[0], run(2)[0]
    assert greedy.token_ids[0] == A and beam.token_ids == [B, C]
    assert beam.cumulative_logprob == pytest.approx(math.log(0.4 * 0.95), abs=1e-5)
    assert beam.cumulative_logprob > greedy.cumulative_logprob
    assert beam.finish_reason == "stop" and beam.text == "BC"


def test_n_best_beams_come_best_first():
    out = run(3, n=3)
    scores = [c.cumulative_logprob for c in out]
    assert scores == sorted(scores, reverse=True) and [c.index for c in out] == [0, 1, 2]


@pytest.fixture(scope="module")
def tiny(tiny_gguf_factory):
    return load_model(tiny_gguf_factory("Q4_0"), dtype="float32")


def test_one_beam_equals_greedy_on_a_real_model(tiny):
    greedy = tiny.generate(["The quick brown"], max_tokens=12)[0]
    beam = tiny.generate(["The quick brown"], SamplingParams(num_beams=1, max_tokens=12))[0]
    assert beam.token_ids == greedy.token_ids


def test_beam_search_is_deterministic_and_at_least_as_likely_as_greedy(tiny):
    params = SamplingParams(num_beams=4, max_tokens=10, length_penalty=0.0)
    first, second = tiny.generate(["Paris is"], params), tiny.generate(["Paris is"], params)
    assert [c.token_ids for c in first] == [c.token_ids for c in second]
    greedy = tiny.generate(["Paris is"], max_tokens=10)[0]
    if len(first[0].token_ids) == len(greedy.token_ids):
        assert first[0].cumulative_logprob >= greedy.cumulative_logprob - 1e-4


def test_beams_share_the_prompt_blocks_and_give_every_block_back(tiny):
    """Beams fork by sharing blocks (copy-on-write of the partly filled one); none leaks."""
    prompt = "The quick brown fox jumps over the lazy dog " * 3
    before = tiny.stats()["kv_blocks_in_use"]
    out = tiny.generate([prompt], SamplingParams(num_beams=6, n=6, max_tokens=8, length_penalty=0.0))
    assert len(out) == 6 and len({tuple(c.token_ids) for c in out}) == 6
    assert tiny.stats()["kv_blocks_in_use"] == before == 0
