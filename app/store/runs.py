"""Runs and their steps: written `running` at the start and completed at the end; read, searched, exported, deleted."""
from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from prompts.trace import Trace

from .database import Database, retry_when_locked
from .models import Run, Step, now, plain, to_json, utc

RUN_SEQ = sa.literal_column("run.seq")  # insertion order, and the FTS rowid


def new_id() -> str:
    """A 32-hex-digit id that sorts by creation time: 12 digits of epoch milliseconds, 20 random."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def fts_query(text: str) -> str | None:
    """User text as a safe FTS5 query: every word a quoted prefix term, all required; None if no words."""
    words = re.findall(r"\w+", text)
    return " ".join(f'"{word}"*' for word in words) or None


class RunStore(Database):
    """The run and step tables."""

    @retry_when_locked
    def start_run(self, question: str, strategy: str, *, expected: str | None = None, batch_id: str | None = None,
                  question_id: str | None = None, template_name: str = "", template_version: int = 0,
                  model_id: str = "", backend: str = "", sampling: dict | None = None,
                  model_hash: str | None = None, parent_run_id: str | None = None, forked_at: int | None = None,
                  lineage: dict | None = None) -> str:
        """Record a run as `running` before any work, so a crash leaves an honest trace; return its id.

        A fork or replay names its parent run, the step it forked at and how it was made (`lineage`)."""
        run = Run(id=new_id(), created_at=now(), strategy=strategy, question=question, expected=expected,
                  batch_id=batch_id, question_id=question_id, template_name=template_name,
                  template_version=template_version, model_id=model_id, model_hash=model_hash, backend=backend,
                  sampling_json=to_json(sampling), parent_run_id=parent_run_id, forked_at=forked_at,
                  lineage_json=to_json(lineage))
        with self._write() as session:
            session.add(run)
        return run.id

    @retry_when_locked
    def finish_run(self, run_id: str, trace: Trace, correct: bool | None = None) -> None:
        """Write a run's final fields and all its steps (replacing any) in one transaction."""
        with self._write() as session:
            run = _run_row(session, run_id)
            run.answer, run.status, run.error, run.correct = trace.answer, trace.status, trace.error, correct
            run.template_name = trace.template_name or run.template_name
            run.template_version = trace.template_version or run.template_version
            run.model_id, run.backend = trace.model_id or run.model_id, trace.backend or run.backend
            if trace.sampling:
                run.sampling_json = to_json(trace.sampling)
            run.counters_json = to_json(trace.counters)
            run.prompt_tokens, run.completion_tokens = trace.prompt_tokens, trace.completion_tokens
            run.duration_ms = trace.duration_ms
            session.execute(sa.delete(Step).where(col(Step.run_id) == run_id))
            session.add_all(_step_rows(run_id, trace.steps))

    @retry_when_locked
    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a run `error` after a crash the caller caught; its duration is the time since it started."""
        with self._write() as session:
            run = _run_row(session, run_id)
            run.status, run.error = "error", error
            run.duration_ms = (now() - utc(run.created_at)).total_seconds() * 1e3

    @retry_when_locked
    def add_lineage(self, run_id: str, **facts) -> None:
        """Add facts to how a run was made (a replay's identity, whether a fork's replayed steps held)."""
        with self._write() as session:
            run = _run_row(session, run_id)
            run.lineage_json = to_json({**json.loads(run.lineage_json or "{}"), **facts})

    @retry_when_locked
    def add_step_meta(self, run_id: str, idx: int, **meta) -> None:
        """Add keys to one stored step's meta (e.g. that a person edited it)."""
        with self._write() as session:
            step = session.exec(select(Step).where(Step.run_id == run_id, Step.idx == idx)).one()
            step.meta_json = to_json({**json.loads(step.meta_json or "{}"), **meta})

    def forks_of(self, run_id: str) -> list[dict]:
        """The runs forked from or replaying this one, oldest first (without steps)."""
        with self._read() as session:
            rows = session.exec(select(Run).where(Run.parent_run_id == run_id).order_by(RUN_SEQ)).all()
            return [plain(row) for row in rows]

    def get_run(self, run_id: str) -> dict | None:
        """A run as a dict with its `steps` (dicts, in order), or None if there is no such run."""
        with self._read() as session:
            run = session.get(Run, run_id)
            if run is None:
                return None
            return {**plain(run), "steps": _steps(session, run_id)}

    @retry_when_locked
    def delete_run(self, run_id: str) -> bool:
        """Delete a run; its steps go by ON DELETE CASCADE and its search entry by trigger. False if there was none."""
        with self._write() as session:
            return session.execute(sa.delete(Run).where(col(Run.id) == run_id)).rowcount > 0

    def search_runs(self, text: str | None = None, strategy: str | None = None, status: str | None = None,
                    batch_id: str | None = None, template_name: str | None = None,
                    template_version: int | None = None, limit: int | None = 50, offset: int = 0) -> list[dict]:
        """Runs matching every given filter, newest first; `text` is full-text over questions and answers."""
        query = _filtered(select(Run), text, strategy, status, batch_id, template_name, template_version)
        if query is None:
            return []
        query = query.order_by(RUN_SEQ.desc()).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as session:
            return [plain(run) for run in session.exec(query).all()]

    def export_jsonl(self, path: str | Path, **filters) -> int:
        """Write the runs matching `search_runs` filters, oldest first, one JSON object with steps a line."""
        runs = self.search_runs(**filters, limit=None)
        with open(path, "w", encoding="utf-8") as out, self._read() as session:
            for run in reversed(runs):
                run["steps"] = _steps(session, run["id"])
                out.write(json.dumps(run, ensure_ascii=False) + "\n")
        return len(runs)


def _run_row(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise KeyError(f"no run {run_id!r}")
    return run


def _steps(session: Session, run_id: str) -> list[dict]:
    rows = session.exec(select(Step).where(Step.run_id == run_id).order_by(col(Step.idx))).all()
    return [plain(row) for row in rows]


def _filtered(query, text, strategy, status, batch_id, template_name, template_version):
    """`query` narrowed by the given filters; None when `text` has no searchable words (nothing matches)."""
    if text is not None and text.strip():
        match = fts_query(text)
        if match is None:
            return None
        hits = sa.select(sa.column("rowid")).select_from(sa.table("run_fts")).where(
            sa.text("run_fts MATCH :match").bindparams(match=match))
        query = query.where(RUN_SEQ.in_(hits))
    for column, value in ((Run.strategy, strategy), (Run.status, status), (Run.batch_id, batch_id),
                          (Run.template_name, template_name), (Run.template_version, template_version)):
        if value is not None:
            query = query.where(column == value)
    return query


def _step_rows(run_id: str, steps: Iterable) -> list[Step]:
    """Table rows for a trace's steps, numbered in order from 0."""
    return [Step(run_id=run_id, idx=idx, kind=step.kind, name=step.name, input=step.input, output=step.output,
                 prompt_tokens=step.prompt_tokens, completion_tokens=step.completion_tokens,
                 duration_ms=step.duration_ms, error=step.error, meta_json=to_json(step.meta))
            for idx, step in enumerate(steps)]
