"""The tools strategies use, placed in files under REASON_HOME: the Wikipedia corpus and cache."""
from __future__ import annotations

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
