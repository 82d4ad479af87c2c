"""Answers are extracted by the grammar they are scored by: extract, then score against the natural answer."""
import pytest

from prompts.answers import extract_answer, last_number, majority_vote
from prompts.numbers import find_numbers
from prompts.scoring import score


@pytest.mark.parametrize("text, answer, expected", [
    ("The answer is 3/4.", "3/4", ["0.75", "3/4"]),  # a fraction, not its denominator
    ("So she owes \u22125 dollars. The answer is \u22125.", "-5", ["-5"]),  # Unicode minus
    ("Mix in 1 1/2 cups", "1 1/2", ["1.5", "1 1/2", "3/2"]),  # a mixed number
    ("The answer is 2.5e3.", "2.5e3", ["2500", "2,500"]),  # an exponent
    ("The answer is $1,234.50.", "1234.50", ["1234.5", "$1,234.50"]),  # currency with cents
    ("It costs \u20ac12.05 in total", "12.05", ["12.05"]),
    ("The answer is 18 km.", "18", ["18", "18 km"]),  # a unit
    ("The answer is 25%.", "25", ["25", "25%"]),
    ("The answer is -$3.", "-3", ["-3", "\u22123"]),
    ("That leaves .5 of the pie", "0.5", ["1/2", "0.5"]),
    ("x = -7/2", "-7/2", ["-3.5"]),
])
def test_extracted_answers_score_correct(text, answer, expected):
    assert extract_answer(text) == answer
    for gold in expected:
        assert score(extract_answer(text), gold).correct, gold


@pytest.mark.parametrize("text, wrong", [
    ("The answer is 3/4.", "4"),
    ("The answer is \u22125.", "5"),
    ("Mix in 1 1/2 cups", "2"),
    ("The answer is 2.5e3.", "3"),
])
def test_extracted_answers_are_not_a_piece_of_the_number(text, wrong):
    assert not score(extract_answer(text), wrong).correct


@pytest.mark.parametrize("text, number", [
    ("COVID-19 cases", "19"),  # a hyphen after a word is no minus sign
    ("10-3 = 7", "7"),
    ("on 3/4/2020 we had 6", "6"),
    ("1,2,3", "3"),
    ("3/0", None),  # no finite value
    ("v1.2.3", None),
    ("", None),
])
def test_last_number_edge_cases(text, number):
    assert last_number(text) == number


def test_find_numbers_keeps_order_spelling_and_value():
    numbers = find_numbers("From \u22122 to 1 1/2, then 3/4 of $1,000 is 750.")
    assert [n.text for n in numbers] == ["-2", "1 1/2", "3/4", "1000", "750"]
    assert [n.value for n in numbers] == [-2.0, 1.5, 0.75, 1000.0, 750.0]


def test_majority_vote_counts_equal_numbers_together():
    winner, counts = majority_vote(["0.75", "3/4", "1", "1.0", "0.75"], [-1.0, -1.0, -0.1, -0.1, -1.0])
    assert (winner, counts) == ("0.75", {"0.75": 3, "1": 2})


def test_majority_vote_float_noise_agrees_but_near_numbers_do_not():
    assert majority_vote(["0.3", "0.30000000000000004"], [0, 0])[1] == {"0.3": 2}
    assert majority_vote(["0.3", "0.31"], [0, 0])[1] == {"0.3": 1, "0.31": 1}


def test_majority_vote_keeps_text_answers_apart_from_numbers():
    counts = majority_vote(["Paris", "paris", "Apollo 11", "11"], [0, 0, 0, 0])[1]
    assert counts == {"Paris": 1, "paris": 1, "Apollo 11": 1, "11": 1}
