"""The live Wikipedia API (the `wikipedia` package) as a WikiTool backend, every answer cached in SQLite."""
from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import requests
import wikipedia

from .markup import HEADING_LINE
from .tool import Page, WikiUnavailable

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (requests.RequestException, wikipedia.exceptions.WikipediaException, OSError)


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
            return {"title": found.title, "text": HEADING_LINE.sub("", found.content)}
        except wikipedia.exceptions.DisambiguationError as exc:
            return {"options": [option for option in exc.options if option]}
        except wikipedia.exceptions.PageError:
            return {"missing": True}
