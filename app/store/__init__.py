"""The trace store: runs, their steps, prompt template versions and batches in SQLite (WAL) via SQLModel.

Every public read returns plain JSON-ready dicts (`*_json` columns decoded, times as ISO-8601 UTC strings).
"""
from __future__ import annotations

from pathlib import Path

from app.settings import Settings

from .batches import BatchStore
from .migrations import MIGRATIONS, migrate
from .models import BATCH_STATUSES, RUN_STATUSES
from .runs import RunStore, fts_query, new_id
from .templates import TemplateStore

DB_NAME = "reason.db"

__all__ = ["BATCH_STATUSES", "DB_NAME", "MIGRATIONS", "RUN_STATUSES", "Store", "fts_query", "new_id"]


class Store(RunStore, TemplateStore, BatchStore):
    """One SQLite database, migrated on open; safe to share between threads (a pooled connection per operation)."""

    def __init__(self, path: str | Path):
        super().__init__(path, setup=migrate)

    @classmethod
    def open(cls, settings: Settings) -> Store:
        """The store at `settings.home / reason.db`."""
        return cls(Path(settings.home) / DB_NAME)
