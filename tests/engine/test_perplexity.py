"""Perplexity the llama-perplexity way: windows, the scored half, and agreement with llama.cpp."""
import math

import pytest
import torch

from engine import load_model
from engine.perplexity import perplexity, window_nll, windows_of


def test_windows_are_whole_and_start_with_bos():
    assert windows_of(list(range(10, 21)), 4, bos_id=1) == [[1, 11, 12, 13], [1, 15, 16, 17]]
    assert windows_of(list(range(10, 21)), 4, bos_id=None)[1] == [14, 15, 16, 17]
    with pytest.raises(ValueError, match="at least 4"):
        windows_of([1, 2, 3], 2, None)


def test_only_the_second_half_of_a_window_is_scored():
    window = [0, 1, 2, 3, 0, 1, 2, 3]
    logits = torch.zeros(8, 4)
    logits[5, 2] = 10.0  # position 5 predicts token 6 (= 2) confidently; earlier positions do not count
    nll, count = window_nll(logits, window)
    assert count == 3  # positions 4, 5, 6 predict tokens 5, 6, 7
    expected = 2 * math.log(4) + -torch.log_softmax(logits[5], -1)[2].item()
    assert nll == pytest.approx(expected)


def test_a_uniform_model_has_the_vocabulary_as_perplexity():
    result = perplexity(lambda w: torch.zeros(len(w), 50), list(range(40)), 8, None)
    assert result.value == pytest.approx(50.0) and result.windows == 5 and result.tokens_scored == 15


def test_too_short_a_text_is_a_clear_error(tiny_gguf_factory):
    with pytest.raises(ValueError, match="fewer than one window"):
        load_model(tiny_gguf_factory("F32")).perplexity("short", ctx=64)
