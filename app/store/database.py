"""One SQLite file through SQLAlchemy: WAL, a busy timeout, foreign keys on, and writers that lock up front."""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
LOCK_RETRIES = 5


class Database:
    """The connection pool of one database file; safe to share between threads (a connection per operation)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(
            f"sqlite:///{self.path}", connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=8, max_overflow=24)
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)
        # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred read-then-write transaction
        # can fail with SQLITE_BUSY without ever waiting on busy_timeout.
        self.writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._use_wal()

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def _use_wal(self) -> None:
        # journal_mode cannot change inside a transaction, and it persists in the file: set it once, raw.
        raw = self.engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA journal_mode=WAL")
        finally:
            raw.close()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self.writer, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session


def retry_when_locked(method: Callable) -> Callable:
    """Retry a whole write when SQLite still reports a lock after busy_timeout (a rare, long writer)."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        for attempt in range(LOCK_RETRIES):
            try:
                return method(*args, **kwargs)
            except OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or attempt == LOCK_RETRIES - 1:
                    raise
                log.warning("database locked in %s, retry %d", method.__name__, attempt + 1)
                time.sleep(0.05 * 2 ** attempt)
    return wrapper


def _on_connect(dbapi_connection, _record) -> None:
    """Per-connection settings; SQLAlchemy, not the sqlite3 module, decides when transactions begin."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: a crash can lose only the last commits
    cursor.execute("PRAGMA foreign_keys = ON")  # ON DELETE CASCADE / SET NULL hold only with this
    cursor.close()


def _on_begin(conn: sa.Connection) -> None:
    """Emit BEGIN ourselves: IMMEDIATE for writers, plain (deferred) for readers."""
    mode = conn.get_execution_options().get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())
