"""Generated text coloured by each token's probability: low-confidence tokens stand out, and hovering
(or focusing) a token shows its probability and the model's top alternatives.

Per-token log-probabilities come from the step's meta["logprobs"]: [token, logprob, [[alt, logprob], …]].
In a trace that can be forked, each token carries its index and its alternatives (data-i, data-alts), so
clicking one offers "Branch here" (page.js); a diff marks the token where two runs part.
"""
from __future__ import annotations

import html
import json
import math

# (lowest probability of the band, CSS class, legend text), most confident first
BANDS = ((0.9, "p-high", "≥ 90%"), (0.5, "p-mid", "50–90%"), (0.2, "p-low", "20–50%"), (0.0, "p-vlow", "< 20%"))


def band(probability: float) -> str:
    return next(css for lowest, css, _ in BANDS if probability >= lowest)


def legend() -> str:
    """What the colours mean."""
    keys = "".join(f'<span class="tok-key {css}">{text}</span>' for _, css, text in BANDS)
    return f'<div class="tok-legend">token probability: {keys} <span class="hint">(hover a token for alternatives)</span></div>'


def _tip(logprob: float, alternatives: list) -> str:
    top = ", ".join(f"{alt!r} {math.exp(lp):.0%}" for alt, lp in alternatives[:5])
    return f"p = {math.exp(logprob):.1%}" + (f" · top: {top}" if top else "")


def token_span(text: str, logprob: float, alternatives: list, index: int | None = None, mark: bool = False) -> str:
    """One coloured token; with `index`, it can be branched at (its other alternatives in data-alts)."""
    tip = html.escape(_tip(logprob, alternatives), quote=True)
    css = f"tok {band(math.exp(logprob))}" + (" tok-diverge" if mark else "")
    branch = ""
    if index is not None:
        others = json.dumps([[alt, round(math.exp(lp), 4)] for alt, lp in alternatives if alt != text], ensure_ascii=False)
        branch = f' data-i="{index}" data-alts="{html.escape(others, quote=True)}"'
    return f'<span class="{css}" tabindex="0" data-tip="{tip}"{branch}>{html.escape(text)}</span>'


def coloured_output(output: str, logprobs: list, branchable: bool = False, mark: int | None = None) -> str | None:
    """The output spelled by its coloured tokens, or None when the tokens do not spell it exactly
    (a split multi-byte character, a stripped reasoning block): then the caller shows plain text.
    `branchable`: tokens carry what Branch here needs; `mark`: the token index where a diff parts."""
    spans, used = [], 0
    for i, (token, logprob, alternatives) in enumerate(logprobs):
        if used >= len(output):
            break  # tokens of a stop string, cut from the output
        piece = token[: len(output) - used]
        if not piece or output[used:used + len(piece)] != piece:
            return None
        spans.append(token_span(piece, logprob, alternatives, i if branchable and piece == token else None, i == mark))
        used += len(piece)
    return "".join(spans) if used == len(output) else None


def token_strip(logprobs: list, mark: int | None = None) -> str:
    """Every generated token, coloured, as generated (when they do not spell the output)."""
    return "".join(token_span(token, logprob, alternatives, mark=i == mark)
                   for i, (token, logprob, alternatives) in enumerate(logprobs))


def low_confidence(logprobs: list, below: float = 0.5) -> int:
    """How many tokens the model was less than `below` sure of."""
    return sum(1 for _, logprob, _ in logprobs if math.exp(logprob) < below)
