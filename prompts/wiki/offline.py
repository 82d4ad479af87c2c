"""The offline Wikipedia corpus: pages in SQLite, exact titles by key, FTS5 (words and trigrams) for similar ones."""
from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

from .tool import Page, WikiUnavailable

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
                           (title_key(title), title.strip()))
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


def title_key(title: str) -> str:
    """The key pages are found by: Wikipedia titles treat "_" as a space; matching ignores case and spacing."""
    return " ".join(title.replace("_", " ").split()).casefold()


def create_tables(conn: sqlite3.Connection) -> None:
    """The corpus tables, their full-text indexes and the triggers that keep the two in step."""
    conn.executescript(_SCHEMA)


def upsert_page(conn: sqlite3.Connection, page: Page) -> None:
    """Write a page, replacing one with the same title."""
    conn.execute(_UPSERT, (page.title, title_key(page.title), page.text))
