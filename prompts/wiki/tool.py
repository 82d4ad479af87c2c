"""The ReAct Wikipedia tool (Yao et al. 2022, `wikienv.py`): Search[entity] and Lookup[keyword].

One `WikiTool` per episode over a backend: anything with `page()` and `similar()` (see `WikiBackend`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

NO_PAGE = "No page loaded: use Search[entity] first."
NO_MORE_RESULTS = "No more results."  # the paper's wording


@dataclass(frozen=True)
class Page:
    """One article: its title and its plain text (paragraphs separated by newlines)."""

    title: str
    text: str


class WikiUnavailable(Exception):
    """A backend could not answer at all; str(exc) is the observation shown to the agent."""


class WikiBackend(Protocol):
    """What WikiTool needs from a source of pages; either method may raise WikiUnavailable."""

    def page(self, title: str) -> Page | None:
        """The page titled `title`, or None when there is none."""

    def similar(self, query: str, limit: int = 5) -> list[str]:
        """Up to `limit` titles resembling `query`, best first."""


# --- sentences -------------------------------------------------------------------------------

# A sentence ends at . ! or ? (plus closing quotes/brackets), then whitespace, then a capital,
# digit or opening quote; a paragraph (line) always ends one. No boundary after an abbreviation.
_BOUNDARY = re.compile(r"""[.!?]["'”’)\]]*\s+(?=["'“‘(\[]?[A-Z0-9À-ÖØ-Þ])""")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "mt", "jr", "sr", "vs", "no", "fig", "ca",
                  "approx", "inc", "ltd", "co", "corp", "gen", "col", "lt", "sgt", "rev", "hon"}
_INITIALS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")  # "J", "U.S", "e.g"


def split_sentences(text: str) -> list[str]:
    """Split text into sentences: by line, then at sentence ends that follow no abbreviation."""
    sentences = []
    for paragraph in text.splitlines():
        start = 0
        for boundary in _BOUNDARY.finditer(paragraph):
            if paragraph[boundary.start()] == "." and _is_abbreviation(paragraph[start:boundary.start()]):
                continue
            sentences.append(paragraph[start:boundary.end()].strip())
            start = boundary.end()
        if paragraph[start:].strip():
            sentences.append(paragraph[start:].strip())
    return sentences


def _is_abbreviation(before_period: str) -> bool:
    words = before_period.split()
    word = words[-1].lstrip("\"'“‘([").lower() if words else ""
    return word in _ABBREVIATIONS or bool(_INITIALS.fullmatch(word))


# --- the tool --------------------------------------------------------------------------------


class WikiTool:
    """Search/Lookup over one backend, holding the current page: use one per question (or reset())."""

    def __init__(self, backend: WikiBackend, sentences: int = 5, similar: int = 5) -> None:
        self.backend = backend
        self.sentences = sentences
        self.similar = similar
        self.reset()

    def reset(self) -> None:
        """Forget the current page and lookup position, as at the start of an episode."""
        self.page: Page | None = None
        self._page_sentences: list[str] = []
        self._keyword: str | None = None
        self._hits: list[str] = []
        self._cursor = 0

    def search(self, entity: str) -> str:
        """Search[entity]: the page's first sentences, or "Could not find X. Similar: [...]."."""
        entity = entity.strip()
        if not entity:
            return "Search needs an entity, as in Search[Paris]."
        try:
            page = self.backend.page(entity)
            if page is None:
                return f"Could not find {entity}. Similar: {self.backend.similar(entity, self.similar)[:self.similar]}."
        except WikiUnavailable as exc:
            return str(exc)
        self.reset()
        self.page, self._page_sentences = page, split_sentences(page.text)
        return " ".join(self._page_sentences[:self.sentences]) or f"The page {page.title} has no text."

    def lookup(self, keyword: str) -> str:
        """Lookup[keyword]: "(Result i / N) sentence", the next sentence of the page with the keyword."""
        if self.page is None:
            return NO_PAGE
        keyword = keyword.strip()
        if keyword != self._keyword:
            needle = keyword.casefold()
            self._keyword, self._cursor = keyword, 0
            self._hits = [s for s in self._page_sentences if needle and needle in s.casefold()]
        if self._cursor >= len(self._hits):
            return NO_MORE_RESULTS
        self._cursor += 1
        return f"(Result {self._cursor} / {len(self._hits)}) {self._hits[self._cursor - 1]}"
