"""One SQLite file through SQLAlchemy: WAL, a busy timeout, foreign keys on, and writers that lock up front.

Opening is serialised between processes, and every text it writes is made valid Unicode first.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: opening then relies on the retries alone
    fcntl = None

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
LOCK_RETRIES = 5
OPEN_LOCK_TIMEOUT_S = 60.0  # how long to wait for another process opening (and migrating) the same file


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


class Database:
    """The connection pool of one database file; safe to share between threads (a connection per operation)."""

    def __init__(self, path: str | Path, setup: Callable[[Database], None] | None = None):
        """Open (creating) the file; `setup` (the migrations) runs while no other process is opening it."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(
            f"sqlite:///{self.path}", connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=8, max_overflow=24)
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)
        event.listen(self.engine, "before_cursor_execute", _valid_parameters, retval=True)
        # Writers take the write lock up front (BEGIN IMMEDIATE): a deferred read-then-write transaction
        # can fail with SQLITE_BUSY without ever waiting on busy_timeout.
        self.writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        with _opening_lock(self.path):
            self._use_wal()
            if setup is not None:
                setup(self)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @retry_when_locked  # another program (not this app, which takes the opening lock) may hold the file
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


@contextmanager
def _opening_lock(path: Path) -> Iterator[None]:
    """Hold `<db>.lock` while opening: SQLite's busy handler does not cover switching a new file to WAL,
    so two processes opening a fresh store at once could fail with `database is locked`."""
    if fcntl is None:
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as handle:
        deadline = time.monotonic() + OPEN_LOCK_TIMEOUT_S
        while not _try_lock(handle):
            if time.monotonic() > deadline:
                raise TimeoutError(f"another process has been opening {path} for {OPEN_LOCK_TIMEOUT_S:g} s "
                                   f"(it holds {lock_path}); stop it or try again")
            time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _try_lock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def valid_text(value):
    """`value` with every string in it (nested in lists, tuples and dicts, keys too) made valid Unicode:
    a lone surrogate, which SQLite and UTF-8 files refuse, becomes U+FFFD; valid surrogate pairs are joined."""
    if isinstance(value, str):
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if isinstance(value, list):
        return [valid_text(item) for item in value]
    if isinstance(value, tuple):
        return tuple(valid_text(item) for item in value)
    if isinstance(value, dict):
        return {valid_text(key): valid_text(item) for key, item in value.items()}
    return value


def _valid_parameters(_conn, _cursor, statement, parameters, _context, _executemany):
    """Every write goes through here: text the program or model produced is stored, never refused."""
    return statement, valid_text(parameters)
