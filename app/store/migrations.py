"""The schema as named migrations, applied in order, each once, and recorded in `_migrations`.

A schema change is a new function at the end of MIGRATIONS (never an edit of an applied one); the
SQLModel classes in models.py then follow it, and the schema test holds the two equal.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from .database import Database, retry_when_locked
from .models import now

log = logging.getLogger(__name__)


def _execute(conn: sa.Connection, statements: Iterable[str]) -> None:
    for statement in statements:
        conn.exec_driver_sql(statement)


def m001_initial(conn: sa.Connection) -> None:
    """The run, step, prompt_template and batch tables."""
    _execute(conn, (
        """CREATE TABLE run (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            created_at DATETIME NOT NULL,
            strategy TEXT NOT NULL,
            question TEXT NOT NULL,
            expected TEXT,
            answer TEXT,
            correct BOOLEAN,
            status TEXT NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'ok', 'no_answer', 'error')),
            error TEXT,
            model_id TEXT NOT NULL DEFAULT '',
            model_hash TEXT,
            backend TEXT NOT NULL DEFAULT '',
            template_name TEXT NOT NULL DEFAULT '',
            template_version INTEGER NOT NULL DEFAULT 0,
            sampling_json TEXT NOT NULL DEFAULT '{}',
            counters_json TEXT NOT NULL DEFAULT '{}',
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            duration_ms REAL NOT NULL DEFAULT 0,
            batch_id TEXT REFERENCES batch(id) ON DELETE SET NULL,
            question_id TEXT
        )""",
        "CREATE INDEX ix_run_created_at ON run (created_at)",
        "CREATE INDEX ix_run_batch ON run (batch_id, strategy, question_id)",
        "CREATE INDEX ix_run_template ON run (template_name, template_version)",
        "CREATE INDEX ix_run_strategy_status ON run (strategy, status)",
        """CREATE TABLE step (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            kind TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            input TEXT NOT NULL DEFAULT '',
            output TEXT NOT NULL DEFAULT '',
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            duration_ms REAL NOT NULL DEFAULT 0,
            error TEXT,
            meta_json TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE UNIQUE INDEX ix_step_run_id ON step (run_id, idx)",
        """CREATE TABLE prompt_template (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            body TEXT NOT NULL,
            created_at DATETIME NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            UNIQUE (name, version)
        )""",
        """CREATE TABLE batch (
            id TEXT PRIMARY KEY,
            created_at DATETIME NOT NULL,
            input_name TEXT NOT NULL,
            input_hash TEXT NOT NULL,
            strategies_json TEXT NOT NULL DEFAULT '[]',
            settings_json TEXT NOT NULL DEFAULT '{}',
            total INTEGER NOT NULL DEFAULT 0,
            done INTEGER NOT NULL DEFAULT 0,
            correct INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished', 'interrupted')),
            started_at DATETIME,
            finished_at DATETIME
        )""",
    ))


def m002_run_fts(conn: sa.Connection) -> None:
    """External-content FTS5 over run.question/answer keyed by run.seq.

    The triggers keep it exact, and the 'delete' rows must carry the old values, which the triggers have.
    """
    _execute(conn, (
        "CREATE VIRTUAL TABLE run_fts USING fts5(question, answer, content='run', content_rowid='seq')",
        """CREATE TRIGGER run_fts_insert AFTER INSERT ON run BEGIN
            INSERT INTO run_fts (rowid, question, answer) VALUES (new.seq, new.question, new.answer);
        END""",
        """CREATE TRIGGER run_fts_delete AFTER DELETE ON run BEGIN
            INSERT INTO run_fts (run_fts, rowid, question, answer) VALUES ('delete', old.seq, old.question, old.answer);
        END""",
        """CREATE TRIGGER run_fts_update AFTER UPDATE OF question, answer ON run BEGIN
            INSERT INTO run_fts (run_fts, rowid, question, answer) VALUES ('delete', old.seq, old.question, old.answer);
            INSERT INTO run_fts (rowid, question, answer) VALUES (new.seq, new.question, new.answer);
        END""",
        "INSERT INTO run_fts (run_fts) VALUES ('rebuild')",  # index any runs written before this migration
    ))


def rebuilds_tables(migration: Callable) -> Callable:
    """Mark a migration that rebuilds a table: it runs with foreign keys off, or dropping the old table
    would cascade into the rows that reference it (SQLite's 12-step procedure, step 1)."""
    migration.foreign_keys_off = True
    return migration


def _rebuild_table(conn: sa.Connection, table: str, create_sql: str) -> None:
    """Replace `table` by one made with `create_sql`, keeping its rows, indexes and triggers.

    SQLite cannot alter a CHECK: a new table is filled, the old one dropped, the new one renamed,
    and the indexes and triggers that went with the old table are made again.
    """
    kept = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') "
                                "AND sql IS NOT NULL", (table,)).scalars().all()
    columns = ", ".join(row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})"))
    conn.exec_driver_sql(create_sql.replace(f"CREATE TABLE {table} (", f"CREATE TABLE {table}_new (", 1))
    conn.exec_driver_sql(f"INSERT INTO {table}_new ({columns}) SELECT {columns} FROM {table}")
    conn.exec_driver_sql(f"DROP TABLE {table}")
    conn.exec_driver_sql(f"ALTER TABLE {table}_new RENAME TO {table}")
    _execute(conn, kept)
    if conn.exec_driver_sql("PRAGMA foreign_key_check").first():
        raise RuntimeError(f"rebuilding {table} broke a foreign key")


@rebuilds_tables
def m003_run_status_stopped(conn: sa.Connection) -> None:
    """A run can end `stopped` (the person pressed Stop): the run table's status CHECK allows it."""
    create = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'run'").scalar_one()
    create, changed = re.subn(r"CHECK \(status IN \([^)]*\)\)",
                              "CHECK (status IN ('running', 'ok', 'no_answer', 'error', 'stopped'))", create)
    if changed != 1:
        raise RuntimeError("the run table's status CHECK was not found")
    _rebuild_table(conn, "run", create)
    conn.exec_driver_sql("INSERT INTO run_fts (run_fts) VALUES ('integrity-check')")  # the search index still fits


def m004_template_default(conn: sa.Connection) -> None:
    """The version of each template that runs when none is named, set by promoting one.

    A template without a row runs version 1 (the shipped file); one with saved edits keeps running
    its newest, as it did before promotion existed.
    """
    _execute(conn, (
        """CREATE TABLE template_default (
            name TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            promoted_at DATETIME NOT NULL,
            FOREIGN KEY (name, version) REFERENCES prompt_template (name, version)
        )""",
        """INSERT INTO template_default (name, version, promoted_at)
            SELECT name, MAX(version), CURRENT_TIMESTAMP FROM prompt_template GROUP BY name HAVING MAX(version) > 1""",
    ))


def m005_run_config(conn: sa.Connection) -> None:
    """The configuration a batch run belongs to (strategy, template, model, sampling…), by its key in the batch.

    NULL for runs made before experiments: a batch run is then keyed by its strategy.
    """
    _execute(conn, (
        "ALTER TABLE run ADD COLUMN config TEXT",
        "CREATE INDEX ix_run_batch_config ON run (batch_id, config, question_id)",
    ))


def m006_run_lineage(conn: sa.Connection) -> None:
    """Where a run came from: the run it forks or replays, the step it forked at, and how it was made.

    A fork's steps before `forked_at` are its parent's, from the record; deleting the parent keeps the fork.
    """
    _execute(conn, (
        "ALTER TABLE run ADD COLUMN parent_run_id TEXT REFERENCES run(id) ON DELETE SET NULL",
        "ALTER TABLE run ADD COLUMN forked_at INTEGER",
        "ALTER TABLE run ADD COLUMN lineage_json TEXT NOT NULL DEFAULT '{}'",
        "CREATE INDEX ix_run_parent ON run (parent_run_id)",
    ))


Migration = Callable[[sa.Connection], None]
# Recorded under the function's name less its "m" (a Python name cannot start with a digit): "001_initial".
MIGRATIONS: list[tuple[str, Migration]] = [(fn.__name__.removeprefix("m"), fn) for fn in (
    m001_initial,
    m002_run_fts,
    m003_run_status_stopped,
    m004_template_default,
    m005_run_config,
    m006_run_lineage,
)]


def migrate(db: Database) -> None:
    """Apply every migration the database has not had yet, in order (no write at all when none is pending)."""
    applied = _applied(db)
    pending = [(name, migration) for name, migration in MIGRATIONS if name not in applied]
    if not pending:
        return
    with db.writer.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at DATETIME NOT NULL)")
    for name, migration in pending:
        _apply_once(db, name, migration)


def _applied(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        if not conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = '_migrations'").first():
            return set()
        return set(conn.exec_driver_sql("SELECT name FROM _migrations").scalars())


@retry_when_locked
def _apply_once(db: Database, name: str, migration: Migration) -> None:
    # Checked inside the write transaction, so two processes opening at once apply it once.
    with _connection(db, getattr(migration, "foreign_keys_off", False)) as conn, conn.begin():
        if conn.exec_driver_sql("SELECT 1 FROM _migrations WHERE name = ?", (name,)).first():
            return
        migration(conn)
        conn.exec_driver_sql("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, now().isoformat()))
        log.info("applied migration %s to %s", name, db.path)


@contextmanager
def _connection(db: Database, foreign_keys_off: bool) -> Iterator[sa.Connection]:
    """A writer connection, with foreign keys off for the migration when asked (and on again after)."""
    with db.writer.connect() as conn:
        raw = conn.connection.driver_connection
        if foreign_keys_off:
            raw.execute("PRAGMA foreign_keys = OFF")  # outside any transaction: inside one it is a no-op
        try:
            yield conn
        finally:
            if foreign_keys_off:
                raw.execute("PRAGMA foreign_keys = ON")
