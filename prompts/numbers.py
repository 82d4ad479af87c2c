"""The one number grammar that answers are both read and scored by.

A number is an optional sign (ASCII hyphen or U+2212 minus), an optional currency symbol, then a
mixed number ("1 1/2"), a fraction ("3/4") or a decimal with optional thousands commas and
exponent, then an optional "%" (ignored in the value). Its normalized spelling (`Number.text`)
keeps the number as written but drops what only decorates it: "−$1,234.50" -> "-1234.50",
"3 / 4" -> "3/4", "1 1/2" stays "1 1/2", "2.5e3" stays "2.5e3", ".5" -> "0.5", "25%" -> "25".
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

# A "-" right after a word or digit ("COVID-19", "5-3") is a hyphen, not a minus sign.
_NUMBER = re.compile(r"""
    (?<![\w./])
    (?P<sign>[-−+])?
    (?:[$€£¥₹]\s*(?P<sign2>[-−])?\s*)?
    (?:
        (?P<whole>\d+)\s+(?P<mnum>\d+)\s*/\s*(?P<mden>\d+)(?![\d/])
      | (?P<num>\d+)\s*/\s*(?P<den>\d+)(?![\d/])
      | (?P<dec>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\d)|\.\d+)
    )
    (?P<percent>\s*%)?
""", re.VERBOSE)
# A whole answer that is just a number, maybe with one unit word ("18 dollars", "3 km") and a final period.
_ONLY_NUMBER_TAIL = re.compile(r"\s*(?:[^\W\d_]+)?\s*\.?\s*")


@dataclass(frozen=True)
class Number:
    """One number found in text: its normalized spelling and its value."""

    text: str
    value: float


def _is_negative(match: re.Match[str]) -> bool:
    return bool({match["sign"], match["sign2"]} & {"-", "−"})


def _value(match: re.Match[str]) -> float | None:
    if match["dec"] is not None:
        value = float(match["dec"].replace(",", ""))
    elif match["num"] is not None:
        value = int(match["num"]) / int(match["den"]) if int(match["den"]) else None
    else:
        value = int(match["whole"]) + int(match["mnum"]) / int(match["mden"]) if int(match["mden"]) else None
    if value is None or not math.isfinite(value):
        return None  # "3/0" or "1e999" is no number an answer can be
    return -value if _is_negative(match) else value


def _spelling(match: re.Match[str]) -> str:
    if match["dec"] is not None:
        digits = match["dec"].replace(",", "")
        digits = "0" + digits if digits.startswith(".") else digits
    elif match["num"] is not None:
        digits = f"{match['num']}/{match['den']}"
    else:
        digits = f"{match['whole']} {match['mnum']}/{match['mden']}"
    return "-" + digits if _is_negative(match) else digits


def _number(match: re.Match[str]) -> Number | None:
    value = _value(match)
    return None if value is None else Number(_spelling(match), value)


def find_numbers(text: str | None) -> list[Number]:
    """Every number in free text, in order ("3/0" and other non-finite values left out)."""
    found = (_number(match) for match in _NUMBER.finditer(text or ""))
    return [number for number in found if number is not None]


def extract_number(text: str | None) -> float | None:
    """The last number in free text ("The answer is $1,234.50." -> 1234.5), or None if it has none."""
    numbers = find_numbers(text)
    return numbers[-1].value if numbers else None


def parse_number(text: str | None) -> float | None:
    """The value of text that is only a number (with currency, %, one unit word), else None."""
    if not text:
        return None
    text = text.strip()
    match = _NUMBER.match(text)
    if match is None or not _ONLY_NUMBER_TAIL.fullmatch(text, match.end()):
        return None
    return _value(match)
