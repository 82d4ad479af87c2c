"""The ReAct Wikipedia tool (Yao et al. 2022, `wikienv.py`): Search[entity] and Lookup[keyword].

One `WikiTool` per episode over a backend: the live API (cached in SQLite) or an offline FTS5 corpus.
"""
from __future__ import annotations

import bz2
import gzip
import html
import json
import logging
import re
import sqlite3
import xml.etree.ElementTree as ET
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Protocol

import requests
import wikipedia

log = logging.getLogger(__name__)

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


def _title_key(title: str) -> str:
    # Wikipedia titles treat "_" as a space; matching ignores case and spacing.
    return " ".join(title.replace("_", " ").split()).casefold()


# --- live backend ----------------------------------------------------------------------------

_NETWORK_ERRORS = (requests.RequestException, wikipedia.exceptions.WikipediaException, OSError)
_HEADING_LINE = re.compile(r"^\s*=+[^=\n]*=+\s*$", re.M)


class _Cache:
    """Key-value JSON store in SQLite; failures after opening only cost a cache miss."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(path)) as conn, conn:
                conn.execute("CREATE TABLE IF NOT EXISTS responses"
                             " (kind TEXT, key TEXT, value TEXT NOT NULL, PRIMARY KEY (kind, key))")
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"cannot open the Wikipedia cache {path}: {exc}") from exc

    def get(self, kind: str, key: str) -> Any | None:
        try:
            with closing(sqlite3.connect(self.path)) as conn:
                row = conn.execute("SELECT value FROM responses WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        except sqlite3.Error as exc:
            log.warning("Wikipedia cache %s unreadable: %s", self.path, exc)
            return None
        return json.loads(row[0]) if row else None

    def put(self, kind: str, key: str, value: Any) -> None:
        try:
            with closing(sqlite3.connect(self.path)) as conn, conn:
                conn.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (kind, key, json.dumps(value)))
        except sqlite3.Error as exc:
            log.warning("Wikipedia cache %s unwritable: %s", self.path, exc)


class LiveWikipedia:
    """The live Wikipedia API via the `wikipedia` package; every answer is cached in SQLite."""

    def __init__(self, cache_path: str | Path, fetch_page: Callable[..., Any] = wikipedia.page,
                 search: Callable[..., list[str]] = wikipedia.search) -> None:
        self._cache = _Cache(Path(cache_path))
        self._fetch_page = fetch_page
        self._search = search

    def page(self, title: str) -> Page | None:
        """The page with exactly this title (no auto-suggest), or None if missing or ambiguous."""
        entry = self._cached("page", title.strip(), lambda: self._fetch(title.strip()))
        return Page(entry["title"], entry["text"]) if "text" in entry else None

    def similar(self, query: str, limit: int = 5) -> list[str]:
        """A disambiguation page's options, else Wikipedia's search results for `query`."""
        entry = self._cache.get("page", query.strip())
        if entry and "options" in entry:
            return entry["options"][:limit]
        return self._cached("search", f"{limit}\t{query.strip()}", lambda: list(self._search(query, results=limit)))

    def _cached(self, kind: str, key: str, fetch: Callable[[], Any]) -> Any:
        value = self._cache.get(kind, key)
        if value is None:
            try:
                value = fetch()
            except _NETWORK_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"[:120]
                raise WikiUnavailable(f"Wikipedia is unreachable ({reason}); try again later"
                                      " or use the offline corpus.") from exc
            self._cache.put(kind, key, value)
        return value

    def _fetch(self, title: str) -> dict[str, Any]:
        try:
            found = self._fetch_page(title, auto_suggest=False)
            return {"title": found.title, "text": _HEADING_LINE.sub("", found.content)}
        except wikipedia.exceptions.DisambiguationError as exc:
            return {"options": [option for option in exc.options if option]}
        except wikipedia.exceptions.PageError:
            return {"missing": True}


# --- offline backend -------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (id INTEGER PRIMARY KEY, title TEXT NOT NULL UNIQUE,
                                  key TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pages_key ON pages (key);
CREATE VIRTUAL TABLE IF NOT EXISTS pages_fts USING fts5(title, text, content='pages', content_rowid='id',
                                                        tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS titles_fts USING fts5(title, content='pages', content_rowid='id',
                                                         tokenize='trigram');
CREATE TRIGGER IF NOT EXISTS pages_ai AFTER INSERT ON pages BEGIN
  INSERT INTO pages_fts (rowid, title, text) VALUES (new.id, new.title, new.text);
  INSERT INTO titles_fts (rowid, title) VALUES (new.id, new.title);
END;
CREATE TRIGGER IF NOT EXISTS pages_ad AFTER DELETE ON pages BEGIN
  INSERT INTO pages_fts (pages_fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
  INSERT INTO titles_fts (titles_fts, rowid, title) VALUES ('delete', old.id, old.title);
END;
CREATE TRIGGER IF NOT EXISTS pages_au AFTER UPDATE ON pages BEGIN
  INSERT INTO pages_fts (pages_fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
  INSERT INTO pages_fts (rowid, title, text) VALUES (new.id, new.title, new.text);
  INSERT INTO titles_fts (titles_fts, rowid, title) VALUES ('delete', old.id, old.title);
  INSERT INTO titles_fts (rowid, title) VALUES (new.id, new.title);
END;
"""
_UPSERT = ("INSERT INTO pages (title, key, text) VALUES (?, ?, ?)"
           " ON CONFLICT (title) DO UPDATE SET key = excluded.key, text = excluded.text")
_TITLE_WEIGHT = 10.0  # bm25 weight of a title hit relative to a text hit


class OfflineCorpus:
    """Pages imported by import_corpus into SQLite: exact title (any case), FTS5 for similar titles."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no offline Wikipedia corpus at {self.path};"
                                    " build one with `reason wiki import FILE`")

    def page(self, title: str) -> Page | None:
        """The page whose title matches ignoring case and spacing; an exact-case match wins."""
        rows = self._query("SELECT title, text FROM pages WHERE key = ? ORDER BY title = ? DESC LIMIT 1",
                           (_title_key(title), title.strip()))
        return Page(*rows[0]) if rows else None

    def similar(self, query: str, limit: int = 5) -> list[str]:
        """FTS5's best matches for the query's words (or prefixes), then titles with half its trigrams."""
        words = re.findall(r"\w+", query)[:16]
        titles = self._ranked("pages_fts", " OR ".join(f'"{word}"*' for word in words), limit)
        if len(titles) < limit:  # a misspelt entity shares no word with its page, only letters
            trigrams = list(dict.fromkeys(w.casefold()[i:i + 3] for w in words for i in range(len(w) - 2)))
            candidates = self._ranked("titles_fts", " OR ".join(f'"{t}"' for t in trigrams), 4 * limit)
            titles += [title for title in candidates if title not in titles
                       and 2 * sum(t in title.casefold() for t in trigrams) >= len(trigrams)]
        return titles[:limit]

    def _ranked(self, table: str, match: str, limit: int) -> list[str]:
        if not match:
            return []
        weights = f", {_TITLE_WEIGHT}, 1.0" if table == "pages_fts" else ""
        rows = self._query(f"SELECT title FROM {table} WHERE {table} MATCH ? ORDER BY bm25({table}{weights}) LIMIT ?",
                           (match, limit))
        return [title for (title,) in rows]

    def _query(self, sql: str, params: tuple) -> list[tuple]:
        try:
            with closing(sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)) as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise WikiUnavailable(f"The offline Wikipedia corpus cannot be read ({exc}).") from exc


# --- import ----------------------------------------------------------------------------------

_COMPRESSED = {".bz2": bz2.open, ".gz": gzip.open}


def import_corpus(source_path: str | Path, db_path: str | Path, errors: list[str] | None = None) -> int:
    """Import a .jsonl or MediaWiki .xml file (optionally .bz2/.gz) into db_path; returns pages written."""
    source = Path(source_path)
    opener, reader = _source_kind(source)
    errors = [] if errors is None else errors
    already = len(errors)
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with closing(sqlite3.connect(db_path)) as conn:
            conn.executescript(_SCHEMA)
            with opener(source, "rb") as stream, conn:  # one transaction: a broken file imports nothing
                count = 0
                for page in reader(stream, errors):
                    conn.execute(_UPSERT, (page.title, _title_key(page.title), page.text))
                    count += 1
    except ET.ParseError as exc:
        raise ValueError(f"{source} is not well-formed XML ({exc}); nothing imported") from exc
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read corpus file {source}: {exc}") from exc
    except sqlite3.Error as exc:
        raise ValueError(f"cannot write the corpus database {db_path}: {exc}") from exc
    log.info("imported %d pages from %s into %s (%d skipped)", count, source, db_path, len(errors) - already)
    return count


def _source_kind(source: Path) -> tuple[Callable[..., IO[bytes]], Callable[[IO[bytes], list[str]], Iterator[Page]]]:
    if not source.is_file():
        raise ValueError(f"cannot read corpus file {source}: no such file")
    suffixes = [suffix.lower() for suffix in source.suffixes]
    opener = _COMPRESSED[suffixes.pop()] if suffixes and suffixes[-1] in _COMPRESSED else open
    kind = suffixes[-1] if suffixes else ""
    readers = {".jsonl": _jsonl_pages, ".ndjson": _jsonl_pages, ".xml": _xml_pages}
    if kind not in readers:
        raise ValueError(f"unknown corpus file kind {source.name!r}: expected .jsonl"
                         " (one {\"title\", \"text\"} object per line) or a MediaWiki .xml dump,"
                         " optionally compressed (.bz2, .gz)")
    return opener, readers[kind]


def _skip(errors: list[str], message: str) -> None:
    log.warning("wiki import: skipped %s", message)
    errors.append(message)


def _jsonl_pages(stream: IO[bytes], errors: list[str]) -> Iterator[Page]:
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        try:
            page = _jsonl_page(raw)
        except ValueError as exc:  # covers JSONDecodeError and UnicodeDecodeError
            _skip(errors, f"line {number}: {exc}")
            continue
        yield page


def _jsonl_page(raw: bytes) -> Page:
    record = json.loads(raw.decode("utf-8-sig"))
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    title, text = record.get("title"), record.get("text")
    if not isinstance(title, str) or not title.strip() or not isinstance(text, str):
        raise ValueError("expected a non-empty string 'title' and a string 'text'")
    return Page(title.strip(), text)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drops the "{namespace}" that namespaced dumps put on every tag


def _child(elem: ET.Element | None, name: str) -> ET.Element | None:
    return next((child for child in elem if _local(child.tag) == name), None) if elem is not None else None


def _xml_pages(stream: IO[bytes], errors: list[str]) -> Iterator[Page]:
    events = ET.iterparse(stream, events=("start", "end"))
    _, root = next(events)
    number = 0
    for event, elem in events:
        if event == "end" and _local(elem.tag) == "page":
            number += 1
            page = _xml_page(elem, number, errors)
            root.clear()  # keeps memory flat on multi-gigabyte dumps
            if page is not None:
                yield page


def _xml_page(elem: ET.Element, number: int, errors: list[str]) -> Page | None:
    title_elem, ns_elem = _child(elem, "title"), _child(elem, "ns")
    title = (title_elem.text or "").strip() if title_elem is not None else ""
    if not title:
        _skip(errors, f"page {number}: no <title>")
        return None
    text_elem = _child(_child(elem, "revision"), "text")
    raw = (text_elem.text or "") if text_elem is not None else ""
    namespace = (ns_elem.text or "0").strip() if ns_elem is not None else "0"
    if namespace != "0" or _child(elem, "redirect") is not None or raw.lstrip().upper().startswith("#REDIRECT"):
        log.debug("wiki import: %r is not an article, skipped", title)
        return None
    return Page(title, strip_wiki_markup(raw))


# --- markup ----------------------------------------------------------------------------------

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
    (_HEADING_LINE, ""),
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
