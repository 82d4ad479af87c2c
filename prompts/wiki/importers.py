"""`reason wiki import`: JSONL pages or a MediaWiki XML dump (optionally .bz2/.gz) into the offline corpus."""
from __future__ import annotations

import bz2
import gzip
import json
import logging
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import IO

from .markup import strip_wiki_markup
from .offline import create_tables, upsert_page
from .tool import Page

log = logging.getLogger(__name__)

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
            create_tables(conn)
            with opener(source, "rb") as stream, conn:  # one transaction: a broken file imports nothing
                count = 0
                for page in reader(stream, errors):
                    upsert_page(conn, page)
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
