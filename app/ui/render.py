"""Markdown helpers for the pages that show code or YAML (templates, model)."""
from __future__ import annotations

import re


def fenced(text: str, language: str = "") -> str:
    """A code block whose fence is longer than any backtick run inside, so model output cannot break out."""
    longest = max((len(m) for m in re.findall(r"`+", text or "")), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text or ''}\n{fence}"
