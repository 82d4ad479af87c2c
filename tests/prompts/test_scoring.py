"""Answer scoring: number extraction and tolerant comparison, SQuAD normalization, EM and token F1."""
import pytest

from prompts.scoring import (
    Score,
    exact_match,
    extract_number,
    normalize_answer,
    numeric_match,
    parse_number,
    score,
    token_f1,
)

# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("18", 18.0),
    ("1,234", 1234.0),
    ("1,234,567.89", 1234567.89),
    ("$12.50", 12.5),
    ("€3", 3.0),
    ("£ 4", 4.0),
    ("18 dollars", 18.0),
    ("5 apples", 5.0),
    ("3 km", 3.0),
    ("25%", 25.0),
    ("25 %", 25.0),
    ("3/4", 0.75),
    ("1 1/2", 1.5),
    ("-3", -3.0),
    ("\u22123", -3.0),  # Unicode minus sign
    ("-$3", -3.0),
    ("$-3", -3.0),
    ("+7", 7.0),
    ("0.5", 0.5),
    (".5", 0.5),
    ("42.", 42.0),
    ("2e3", 2000.0),
    ("The answer is 42.", 42.0),
    ("The answer is $1,234.50.", 1234.5),
    ("She has 5 apples and 3 oranges, so 8 fruits in all.", 8.0),  # the last number counts
    ("#### 72", 72.0),
    ("x = -3", -3.0),
    ("(-3)", -3.0),
])
def test_extract_number(text, value):
    assert extract_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text, value", [
    ("COVID-19", 19.0),  # a hyphen after a word is no minus sign
    ("5-3", 3.0),
    ("1,2,3", 3.0),
    ("v1.2.3", None),
    ("3/0", None),
    ("3/0 or 7", 7.0),
    ("", None),
    (None, None),
    ("no digits here", None),
    ("eighteen", None),
])
def test_extract_number_edge_cases(text, value):
    assert extract_number(text) == value


@pytest.mark.parametrize("text, value", [
    ("18", 18.0), (" 1,234 ", 1234.0), ("$12.50", 12.5), ("25%", 25.0), ("18 dollars", 18.0),
    ("3/4", 0.75), ("-3.", -3.0), ("\u22123", -3.0),
    ("The answer is 42", None), ("Apollo 11", None), ("2 Live Crew", None), ("42 or 43", None),
    ("", None), (None, None), ("$", None),
])
def test_parse_number_accepts_only_a_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("predicted, expected", [
    ("18", "18"),
    ("1234", "1,234"),
    ("1,234", "1234"),
    ("$18.00", "18"),
    ("18 dollars", "18"),
    ("The answer is 42.", "42"),
    ("25%", "25"),
    ("0.75", "3/4"),
    ("3/4", "0.75"),
    ("\u22123", "-3"),
    ("-3", "\u22123"),
    ("18.0", "18"),
    ("0.30000000000000004", "0.3"),
    ("1e6", "1,000,000"),
])
def test_numeric_match(predicted, expected):
    assert numeric_match(predicted, expected)


@pytest.mark.parametrize("predicted, expected", [
    ("42", "4.2"),
    ("-3", "3"),
    ("3", "-3"),
    ("1,234", "1234.5"),
    ("1.234", "1,234"),
    ("18.01", "18"),
    ("0.7", "3/4"),
    ("", "18"),
    (None, "18"),
    ("eighteen", "18"),
    ("18", "Paris"),
])
def test_numeric_mismatch(predicted, expected):
    assert not numeric_match(predicted, expected)


def test_numeric_tolerances():
    assert not numeric_match("100.5", "100")
    assert numeric_match("100.5", "100", rel_tol=0.01)
    assert numeric_match("0.001", "0", abs_tol=0.01)
    assert not numeric_match("0.001", "0")


# --- text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, normalized", [
    ("The Beatles", "beatles"),
    ("  a   Tale of Two Cities! ", "tale of two cities"),
    ("An apple, the pear; a plum.", "apple pear plum"),
    ("“Quoted” — Title", "quoted title"),  # Unicode punctuation too
    ("Theatre anthem", "theatre anthem"),  # articles only as whole words
    ("U.S.A.", "usa"),
    ("", ""),
    (None, ""),
    ("the a an", ""),
])
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_exact_match():
    assert exact_match("The Beatles.", "beatles")
    assert exact_match("  Paris ", "paris")
    assert not exact_match("Paris, France", "Paris")
    assert exact_match("", "")
    assert exact_match("the", "")  # both normalize to nothing


def test_token_f1_partial_credit():
    assert token_f1("Paris France", "Paris") == pytest.approx(2 / 3)  # precision 1/2, recall 1
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)  # p = 1, r = 2/3


def test_token_f1_is_symmetric_so_swapped_answers_tie():
    assert token_f1("Paris France", "Paris") == token_f1("Paris", "Paris France")
    assert token_f1("red blue", "blue green") == token_f1("green blue", "blue red") == pytest.approx(0.5)


def test_token_f1_counts_repeated_tokens_once_each():
    assert token_f1("new new york", "new york") == pytest.approx(0.8)  # 2 shared of 3 predicted
    assert token_f1("new york", "new york") == 1.0


def test_token_f1_edge_cases():
    assert token_f1("London", "Paris") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "Paris") == 0.0
    assert token_f1("Paris", "") == 0.0
    assert token_f1(None, "Paris") == 0.0


# --- score -----------------------------------------------------------------------------------


def test_score_numeric():
    assert score("The answer is $1,234.", "1,234") == Score(correct=True, exact=True, f1=1.0, numeric=True)
    assert score("42", "4.2") == Score(correct=False, exact=False, f1=0.0, numeric=True)
    assert score("-3", "3").correct is False
    assert score("25%", "25").correct


def test_score_text():
    s = score("the Beatles", "The Beatles")
    assert s == Score(correct=True, exact=True, f1=1.0, numeric=False)
    s = score("Paris, France", "Paris")
    assert (s.correct, s.exact, s.numeric) == (False, False, False)
    assert s.f1 == pytest.approx(2 / 3)


def test_score_text_with_numbers_in_the_expected_answer():
    assert score("Apollo 11.", "Apollo 11").correct
    assert not score("Apollo 13", "Apollo 11").correct
    assert not score("11", "Apollo 11").numeric


def test_score_expected_number_but_prediction_has_none():
    s = score("eighteen", "18")
    assert not s.correct and not s.numeric


@pytest.mark.parametrize("predicted", [None, "", "   "])
def test_score_empty_prediction_is_not_correct(predicted):
    assert score(predicted, "18") == Score(False, False, 0.0, False)
    assert score(predicted, "Paris") == Score(False, False, 0.0, False)


@pytest.mark.parametrize("expected", ["", "  ", "the", "?"])
def test_score_empty_expected_is_not_correct(expected):
    assert not score("anything", expected).correct


def test_score_against_several_gold_answers_takes_the_best():
    assert score("NYC", ["New York City", "NYC"]).correct
    best = score("New York", ["New York City", "York"])
    assert not best.correct and best.f1 == pytest.approx(0.8)
    assert score("7", ["seven", "7"]).numeric
    assert score("x", []) == Score(False, False, 0.0, False)


def test_score_ties_keep_a_consistent_f1():
    # Both golds give F1 2/3; either way the reported score is the same.
    assert score("red blue", ["red", "blue"]).f1 == pytest.approx(2 / 3)
    assert score("red blue", ["blue", "red"]) == score("red blue", ["red", "blue"])
