"""The tools strategies use, placed in files under REASON_HOME: the Wikipedia corpus and cache."""
from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from prompts.wiki import LiveWikipedia, OfflineCorpus, WikiTool

from .settings import Settings


def wiki_paths(settings: Settings) -> tuple[Path, Path]:
    """(offline corpus database, live-API cache database)."""
    return settings.home / "wiki_corpus.db", settings.home / "wiki_cache.db"


def wiki_tool_factory(settings: Settings, mode: str = "auto") -> Callable[[], WikiTool]:
    """A factory of fresh WikiTools (one per question): offline corpus, live API, or offline when imported."""
    corpus, cache = wiki_paths(settings)
    if mode == "offline" or (mode == "auto" and corpus.is_file()):
        backend = OfflineCorpus(corpus)
    elif mode in ("live", "auto"):
        cache.parent.mkdir(parents=True, exist_ok=True)
        backend = LiveWikipedia(cache)
    else:
        raise ValueError(f"unknown Wikipedia mode '{mode}'; choose auto, offline or live")
    return lambda: WikiTool(backend)


WIKI_HOST = ("en.wikipedia.org", 443)


def wikipedia_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the live Wikipedia API's host answers a TCP connection (a cheap, short check)."""
    try:
        socket.create_connection(WIKI_HOST, timeout=timeout_s).close()
    except OSError:
        return False
    return True


def wiki_problem(settings: Settings, mode: str = "auto", reachable: Callable[[], bool] | None = None) -> str | None:
    """Why ReAct cannot look anything up (no offline corpus, and live Wikipedia unreachable), or None when it can."""
    corpus, _ = wiki_paths(settings)
    if mode != "live" and corpus.is_file():
        return None
    if mode != "offline" and (reachable or wikipedia_reachable)():
        return None
    missing = "there is no offline Wikipedia corpus" + ("" if mode == "offline" else " and en.wikipedia.org cannot be reached")
    return (f"ReAct needs Wikipedia, but {missing}. Import a corpus with `reason wiki import FILE` (JSONL with a title "
            f"and text per line, or a MediaWiki XML dump; it goes to {corpus}), then ask again.")
