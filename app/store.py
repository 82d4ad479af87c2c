"""The trace store: runs, their steps, prompt template versions and batches in SQLite (WAL) via SQLModel.

Every public read returns plain JSON-ready dicts (`*_json` columns decoded, times as ISO-8601 UTC strings).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, Session, SQLModel, col, func, select

from app.settings import Settings
from prompts.trace import Trace

log = logging.getLogger(__name__)

DB_NAME = "reason.db"
RUN_STATUSES = ("running", "ok", "no_answer", "error")
BATCH_STATUSES = ("running", "finished", "interrupted")
BUSY_TIMEOUT_MS = 5000
LOCK_RETRIES = 5


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time: 12 digits of epoch milliseconds, 20 random."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def _now() -> datetime:
    """Now, in UTC (SQLite keeps it without the offset)."""
    return datetime.now(timezone.utc)


def _utc(value: datetime) -> datetime:
    # Older SQLModel versions read DATETIME columns back naive; they were written as UTC.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# ---------------------------------------------------------------------------------------------- models
# These mirror the tables that MIGRATIONS create; the migrations, not these classes, define the schema.


class Run(SQLModel, table=True):
    """One question answered by one strategy; written `running` at the start, completed at the end."""

    __tablename__ = "run"
    # The table also has `seq INTEGER PRIMARY KEY`, a stable rowid for the FTS index, unmapped on purpose.
    id: str = Field(primary_key=True)
    created_at: datetime
    strategy: str
    question: str
    expected: str | None = None
    answer: str | None = None
    correct: bool | None = None
    status: str = "running"
    error: str | None = None
    model_id: str = ""
    model_hash: str | None = None
    backend: str = ""
    template_name: str = ""
    template_version: int = 0
    sampling_json: str = "{}"
    counters_json: str = "{}"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_ms: float = 0.0
    batch_id: str | None = None
    question_id: str | None = None


class Step(SQLModel, table=True):
    """One step of a run's trace (LLM call, tool call, parse error, vote), numbered by idx."""

    __tablename__ = "step"
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    idx: int
    kind: str
    name: str = ""
    input: str = ""
    output: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    meta_json: str = "{}"


class PromptTemplate(SQLModel, table=True):
    """One version of a prompt template's YAML; version 1 is the shipped file."""

    __tablename__ = "prompt_template"
    id: int | None = Field(default=None, primary_key=True)
    name: str
    version: int
    body: str
    created_at: datetime
    note: str = ""


class Batch(SQLModel, table=True):
    """One `reason batch` over an input file, with counts recomputed from its runs."""

    __tablename__ = "batch"
    id: str = Field(primary_key=True)
    created_at: datetime
    input_name: str
    input_hash: str
    strategies_json: str = "[]"
    settings_json: str = "{}"
    total: int = 0
    done: int = 0
    correct: int = 0
    errors: int = 0
    status: str = "running"
    started_at: datetime | None = None
    finished_at: datetime | None = None


# ------------------------------------------------------------------------------------------ migrations

_INITIAL = (
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
)

# External-content FTS5 over run.question/answer keyed by run.seq; the triggers keep it exact, and the
# 'delete' rows must carry the old values, which the triggers have.
_RUN_FTS = (
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
)

Migration = Sequence[str] | Callable[[sa.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = [
    ("001_initial", _INITIAL),
    ("002_run_fts", _RUN_FTS),
]


def _apply(conn: sa.Connection, migration: Migration) -> None:
    """Run one migration: a callable gets the connection, a sequence is SQL statements in order."""
    if callable(migration):
        migration(conn)
        return
    for statement in migration:
        conn.exec_driver_sql(statement)


# ------------------------------------------------------------------------------------- helpers


def _retry_when_locked(method: Callable) -> Callable:
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


def _to_json(value: Any) -> str:
    """JSON text for a dict, list or dataclass (e.g. Settings); Paths and other oddities become strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value if value is not None else {}, default=str, ensure_ascii=False)


def _iso(value: datetime | None) -> str | None:
    return _utc(value).isoformat() if value else None


def _plain(row: SQLModel) -> dict:
    """A row as a JSON-ready dict: `x_json` columns decoded into `x`, datetimes as ISO strings."""
    out = {}
    for key in type(row).model_fields:
        value = getattr(row, key)
        if key.endswith("_json"):
            out[key.removesuffix("_json")] = json.loads(value) if value else None
        elif isinstance(value, datetime):
            out[key] = _iso(value)
        else:
            out[key] = value
    return out


def fts_query(text: str) -> str | None:
    """User text as a safe FTS5 query: every word a quoted prefix term, all required; None if no words."""
    words = re.findall(r"\w+", text)
    return " ".join(f'"{word}"*' for word in words) or None


# --------------------------------------------------------------------------------------- store


class Store:
    """One SQLite database; safe to share between threads (a pooled connection per operation)."""

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
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._migrate()

    @classmethod
    def open(cls, settings: Settings) -> "Store":
        """The store at `settings.home / reason.db`."""
        return cls(Path(settings.home) / DB_NAME)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # --- plumbing

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def _migrate(self) -> None:
        # journal_mode cannot change inside a transaction, and it persists in the file: set it once, raw.
        raw = self.engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA journal_mode=WAL")
        finally:
            raw.close()
        with self._writer.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS _migrations "
                                 "(name TEXT PRIMARY KEY, applied_at DATETIME NOT NULL)")
        for name, migration in MIGRATIONS:
            self._migrate_one(name, migration)

    @_retry_when_locked
    def _migrate_one(self, name: str, migration: Migration) -> None:
        # Checked inside the write transaction, so two processes opening at once apply it once.
        with self._writer.begin() as conn:
            if conn.exec_driver_sql("SELECT 1 FROM _migrations WHERE name = ?", (name,)).first():
                return
            _apply(conn, migration)
            conn.exec_driver_sql("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                                 (name, _now().isoformat()))
            log.info("applied migration %s to %s", name, self.path)

    def applied_migrations(self) -> list[str]:
        """Names of the applied migrations, in the order they were applied."""
        with self.engine.connect() as conn:
            return list(conn.exec_driver_sql("SELECT name FROM _migrations ORDER BY rowid").scalars())

    # --- runs

    @_retry_when_locked
    def start_run(self, question: str, strategy: str, *, expected: str | None = None, batch_id: str | None = None,
                  question_id: str | None = None, template_name: str = "", template_version: int = 0,
                  model_id: str = "", backend: str = "", sampling: dict | None = None,
                  model_hash: str | None = None) -> str:
        """Record a run as `running` before any work, so a crash leaves an honest trace; return its id."""
        run = Run(id=new_id(), created_at=_now(), strategy=strategy, question=question, expected=expected,
                  batch_id=batch_id, question_id=question_id, template_name=template_name,
                  template_version=template_version, model_id=model_id, model_hash=model_hash, backend=backend,
                  sampling_json=_to_json(sampling))
        with self._write() as session:
            session.add(run)
        return run.id

    @_retry_when_locked
    def finish_run(self, run_id: str, trace: Trace, correct: bool | None = None) -> None:
        """Write a run's final fields and all its steps (replacing any) in one transaction."""
        with self._write() as session:
            run = self._get_run_row(session, run_id)
            run.answer, run.status, run.error, run.correct = trace.answer, trace.status, trace.error, correct
            run.template_name = trace.template_name or run.template_name
            run.template_version = trace.template_version or run.template_version
            run.model_id, run.backend = trace.model_id or run.model_id, trace.backend or run.backend
            if trace.sampling:
                run.sampling_json = _to_json(trace.sampling)
            run.counters_json = _to_json(trace.counters)
            run.prompt_tokens, run.completion_tokens = trace.prompt_tokens, trace.completion_tokens
            run.duration_ms = trace.duration_ms
            session.execute(sa.delete(Step).where(col(Step.run_id) == run_id))
            session.add_all(_step_rows(run_id, trace.steps))

    @_retry_when_locked
    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a run `error` after a crash the caller caught; its duration is the time since it started."""
        with self._write() as session:
            run = self._get_run_row(session, run_id)
            run.status, run.error = "error", error
            run.duration_ms = (_now() - _utc(run.created_at)).total_seconds() * 1e3

    @staticmethod
    def _get_run_row(session: Session, run_id: str) -> Run:
        run = session.get(Run, run_id)
        if run is None:
            raise KeyError(f"no run {run_id!r}")
        return run

    def get_run(self, run_id: str) -> dict | None:
        """A run as a dict with its `steps` (dicts, in order), or None if there is no such run."""
        with self._read() as session:
            run = session.get(Run, run_id)
            if run is None:
                return None
            return {**_plain(run), "steps": self._steps(session, run_id)}

    @staticmethod
    def _steps(session: Session, run_id: str) -> list[dict]:
        rows = session.exec(select(Step).where(Step.run_id == run_id).order_by(col(Step.idx))).all()
        return [_plain(row) for row in rows]

    @_retry_when_locked
    def delete_run(self, run_id: str) -> bool:
        """Delete a run, its steps and its search entry; False if there was no such run."""
        with self._write() as session:
            session.execute(sa.delete(Step).where(col(Step.run_id) == run_id))
            result = session.execute(sa.delete(Run).where(col(Run.id) == run_id))
            return result.rowcount > 0

    def recent_runs(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """The newest runs first, without steps."""
        return self.search_runs(limit=limit, offset=offset)

    def search_runs(self, text: str | None = None, strategy: str | None = None, status: str | None = None,
                    batch_id: str | None = None, template_name: str | None = None,
                    template_version: int | None = None, limit: int | None = 50, offset: int = 0) -> list[dict]:
        """Runs matching every given filter, newest first; `text` is full-text over questions and answers."""
        query = _filtered(select(Run), text, strategy, status, batch_id, template_name, template_version)
        if query is None:
            return []
        query = query.order_by(_RUN_SEQ.desc()).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as session:
            return [_plain(run) for run in session.exec(query).all()]

    def export_jsonl(self, path: str | Path, **filters) -> int:
        """Write the runs matching `search_runs` filters, oldest first, one JSON object with steps a line."""
        runs = self.search_runs(**filters, limit=None)
        with open(path, "w", encoding="utf-8") as out, self._read() as session:
            for run in reversed(runs):
                run["steps"] = self._steps(session, run["id"])
                out.write(json.dumps(run, ensure_ascii=False) + "\n")
        return len(runs)

    # --- templates

    @_retry_when_locked
    def save_template(self, name: str, body: str, note: str = "") -> int:
        """Store an edited template as its next version (2 and up: version 1 is the shipped file)."""
        with self._write() as session:
            latest = session.exec(select(func.max(PromptTemplate.version)).where(PromptTemplate.name == name)).one()
            version = max(latest or 0, 1) + 1
            session.add(PromptTemplate(name=name, version=version, body=body, created_at=_now(), note=note))
        return version

    @_retry_when_locked
    def ensure_shipped_templates(self, bodies: dict[str, str]) -> int:
        """Store each shipped template as version 1 unless already there; return how many were added."""
        with self._write() as session:
            present = set(session.exec(select(PromptTemplate.name).where(PromptTemplate.version == 1)).all())
            missing = [name for name in bodies if name not in present]
            session.add_all(PromptTemplate(name=name, version=1, body=bodies[name], created_at=_now(), note="shipped")
                            for name in missing)
        return len(missing)

    def template_versions(self, name: str) -> list[dict]:
        """Every stored version of a template (version, created_at, note, body), oldest first."""
        query = select(PromptTemplate).where(PromptTemplate.name == name).order_by(col(PromptTemplate.version))
        with self._read() as session:
            return [_plain(row) for row in session.exec(query).all()]

    def get_template(self, name: str, version: int) -> str:
        """The YAML text of one template version; KeyError if it is not stored."""
        query = select(PromptTemplate.body).where(PromptTemplate.name == name, PromptTemplate.version == version)
        with self._read() as session:
            body = session.exec(query).first()
        if body is None:
            raise KeyError(f"no template {name!r} version {version}")
        return body

    def latest_template_version(self, name: str) -> int | None:
        """The highest stored version of a template, or None if it has none."""
        with self._read() as session:
            return session.exec(select(func.max(PromptTemplate.version)).where(PromptTemplate.name == name)).one()

    # --- batches

    @_retry_when_locked
    def create_batch(self, input_name: str, input_hash: str, strategies: Iterable[str], settings: Any,
                     total: int) -> str:
        """Record a new running batch; return its id."""
        now = _now()
        batch = Batch(id=new_id(), created_at=now, started_at=now, input_name=input_name, input_hash=input_hash,
                      strategies_json=_to_json(list(strategies)), settings_json=_to_json(settings), total=total)
        with self._write() as session:
            session.add(batch)
        return batch.id

    @_retry_when_locked
    def update_batch_counts(self, batch_id: str) -> dict:
        """Recount a batch's done/correct/errors from its runs; return the batch."""
        with self._write() as session:
            batch = self._get_batch_row(session, batch_id)
            self._recount(session, batch)
            return _plain(batch)

    @_retry_when_locked
    def finish_batch(self, batch_id: str, status: str = "finished") -> dict:
        """Close a batch as `finished` or `interrupted`, with final counts; return it."""
        if status not in BATCH_STATUSES[1:]:
            raise ValueError(f"a batch ends finished or interrupted, not {status!r}")
        with self._write() as session:
            batch = self._get_batch_row(session, batch_id)
            self._recount(session, batch)
            batch.status, batch.finished_at = status, _now()
            return _plain(batch)

    @_retry_when_locked
    def resume_batch(self, batch_id: str) -> dict:
        """Mark an interrupted batch running again (for --resume); return it."""
        with self._write() as session:
            batch = self._get_batch_row(session, batch_id)
            batch.status, batch.finished_at = "running", None
            return _plain(batch)

    @staticmethod
    def _get_batch_row(session: Session, batch_id: str) -> Batch:
        batch = session.get(Batch, batch_id)
        if batch is None:
            raise KeyError(f"no batch {batch_id!r}")
        return batch

    @staticmethod
    def _recount(session: Session, batch: Batch) -> None:
        ended = (Run.batch_id == batch.id, Run.status != "running")
        count = select(func.count()).select_from(Run).where(*ended)
        batch.done = session.exec(count).one()
        batch.correct = session.exec(count.where(col(Run.correct).is_(True))).one()
        batch.errors = session.exec(count.where(Run.status == "error")).one()

    def get_batch(self, batch_id: str) -> dict | None:
        """A batch as a dict, or None."""
        with self._read() as session:
            batch = session.get(Batch, batch_id)
            return _plain(batch) if batch else None

    def list_batches(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """Batches, newest first."""
        query = select(Batch).order_by(col(Batch.id).desc()).offset(offset).limit(limit)
        with self._read() as session:
            return [_plain(batch) for batch in session.exec(query).all()]

    def finished_question_ids(self, batch_id: str, strategy: str) -> set[str]:
        """Question ids whose run for `strategy` in this batch has ended (any status but running)."""
        query = select(Run.question_id).where(Run.batch_id == batch_id, Run.strategy == strategy,
                                              Run.status != "running", col(Run.question_id).is_not(None))
        with self._read() as session:
            return set(session.exec(query).all())

    def unfinished_runs(self, batch_id: str, strategy: str) -> dict[str, str]:
        """question_id -> run id of runs still `running` in this batch, so a resume can finish them."""
        query = select(Run.question_id, Run.id).where(Run.batch_id == batch_id, Run.strategy == strategy,
                                                      Run.status == "running", col(Run.question_id).is_not(None))
        with self._read() as session:
            return {question_id: run_id for question_id, run_id in session.exec(query).all()}

    def accuracy_by_strategy(self, batch_id: str) -> list[dict]:
        """Per strategy over the batch's ended runs: totals, accuracy (correct / total), mean tokens and time."""
        query = (select(Run.strategy, func.count(), _count_if(Run.status == "ok"),
                        _count_if(col(Run.correct).is_(True)), _count_if(Run.status == "error"),
                        func.avg(Run.prompt_tokens + Run.completion_tokens), func.avg(Run.duration_ms))
                 .where(Run.batch_id == batch_id, Run.status != "running")
                 .group_by(Run.strategy).order_by(Run.strategy))
        with self._read() as session:
            rows = session.exec(query).all()
        return [{"strategy": strategy, "total": total, "answered": answered, "correct": correct,
                 "accuracy": correct / total if total else None, "errors": errors,
                 "mean_tokens": mean_tokens, "mean_duration_ms": mean_ms}
                for strategy, total, answered, correct, errors, mean_tokens, mean_ms in rows]


_RUN_SEQ = sa.literal_column("run.seq")  # insertion order, and the FTS rowid


def _count_if(condition) -> sa.ColumnElement:
    """SQL: how many rows of the group meet `condition`."""
    return func.sum(sa.case((condition, 1), else_=0))


def _filtered(query, text, strategy, status, batch_id, template_name, template_version):
    """`query` narrowed by the given filters; None when `text` has no searchable words (nothing matches)."""
    if text is not None and text.strip():
        match = fts_query(text)
        if match is None:
            return None
        hits = sa.select(sa.column("rowid")).select_from(sa.table("run_fts")).where(
            sa.text("run_fts MATCH :match").bindparams(match=match))
        query = query.where(_RUN_SEQ.in_(hits))
    for column, value in ((Run.strategy, strategy), (Run.status, status), (Run.batch_id, batch_id),
                          (Run.template_name, template_name), (Run.template_version, template_version)):
        if value is not None:
            query = query.where(column == value)
    return query


def _step_rows(run_id: str, steps: Iterable) -> list[Step]:
    """Table rows for a trace's steps, numbered in order from 0."""
    return [Step(run_id=run_id, idx=idx, kind=step.kind, name=step.name, input=step.input, output=step.output,
                 prompt_tokens=step.prompt_tokens, completion_tokens=step.completion_tokens,
                 duration_ms=step.duration_ms, error=step.error, meta_json=_to_json(step.meta))
            for idx, step in enumerate(steps)]


def _on_connect(dbapi_connection, _record) -> None:
    """Per-connection settings; SQLAlchemy, not the sqlite3 module, decides when transactions begin."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: a crash can lose only the last commits
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _on_begin(conn: sa.Connection) -> None:
    """Emit BEGIN ourselves: IMMEDIATE for writers, plain (deferred) for readers."""
    mode = conn.get_execution_options().get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())
