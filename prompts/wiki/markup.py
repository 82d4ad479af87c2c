"""Light MediaWiki markup cleanup: wikitext from a dump (or headings from the live API) to plain text."""
from __future__ import annotations

import html
import re

# A "== Section ==" line: the live API's page text has them too.
HEADING_LINE = re.compile(r"^\s*=+[^=\n]*=+\s*$", re.M)

_NOT_ARTICLE_LINK = r"(?!\s*:?\s*(?:File|Image|Category)\s*:)"
_FLAT_BEFORE = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"<ref\b[^>]*/>", re.I), ""),
    (re.compile(r"<ref\b[^>]*(?<!/)>.*?</ref\s*>", re.I | re.S), ""),
]
# These nest, so each removes only an innermost instance and they repeat until nothing changes.
_NESTED = [
    (re.compile(r"\{\{[^{}]*\}\}"), ""),
    (re.compile(r"\{\|[^{}]*?\|\}"), ""),
    (re.compile(r"\[\[\s*:?\s*(?:File|Image|Category)\s*:[^\[\]]*\]\]", re.I), ""),
    (re.compile(r"\[\[" + _NOT_ARTICLE_LINK + r"[^\[\]|]*\|([^\[\]]*)\]\]", re.I), r"\1"),
    (re.compile(r"\[\[" + _NOT_ARTICLE_LINK + r"([^\[\]|]*)\]\]", re.I), r"\1"),
]
_FLAT_AFTER = [
    (re.compile(r"\[(?:https?:)?//[^\s\]]+\s+([^\]]*)\]"), r"\1"),
    (re.compile(r"\[(?:https?:)?//[^\s\]]*\]"), ""),
    (re.compile(r"'{2,}"), ""),
    (HEADING_LINE, ""),
    (re.compile(r"</?[A-Za-z][^>]*>"), ""),
    (re.compile(r"__[A-Z]+__"), ""),
    (re.compile(r"^[*#:;]+\s*", re.M), ""),
]
_TIDY = [
    (re.compile(r"\(\s*[,;]?\s*\)"), ""),  # "Paris ({{IPA}}) is" leaves "()"
    (re.compile(r"[ \t\u00a0]+"), " "),
    (re.compile(r" +([.,;:!?])"), r"\1"),
    (re.compile(r" *\n[\s]*"), "\n"),
]


def strip_wiki_markup(text: str) -> str:
    """Light MediaWiki cleanup: links to their labels; templates, refs, tables, files, headings gone."""
    text = _apply(_FLAT_BEFORE, text)
    while True:
        stripped = _apply(_NESTED, text)
        if stripped == text:
            break
        text = stripped
    text = html.unescape(_apply(_FLAT_AFTER, text))
    return _apply(_TIDY, text).strip()


def _apply(rules: list[tuple[re.Pattern[str], str]], text: str) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text
