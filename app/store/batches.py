"""Batches: one row per `reason batch`, its counts recomputed from its runs; per-strategy and per-configuration
results; resume queries."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from .database import Database, retry_when_locked
from .models import BATCH_STATUSES, Batch, Run, Step, now, plain, to_json
from .runs import RUN_SEQ, new_id


class BatchStore(Database):
    """The batch table, and the batch's runs in the run table."""

    @retry_when_locked
    def create_batch(self, input_name: str, input_hash: str, strategies: Iterable[str], settings: Any,
                     total: int) -> str:
        """Record a new running batch; return its id."""
        started = now()
        batch = Batch(id=new_id(), created_at=started, started_at=started, input_name=input_name,
                      input_hash=input_hash, strategies_json=to_json(list(strategies)), settings_json=to_json(settings),
                      total=total)
        with self._write() as session:
            session.add(batch)
        return batch.id

    @retry_when_locked
    def update_batch_counts(self, batch_id: str) -> dict:
        """Recount a batch's done/correct/errors from its runs; return the batch."""
        with self._write() as session:
            batch = _batch_row(session, batch_id)
            _recount(session, batch)
            return plain(batch)

    @retry_when_locked
    def finish_batch(self, batch_id: str, status: str = "finished") -> dict:
        """Close a batch as `finished` or `interrupted`, with final counts; return it."""
        if status not in BATCH_STATUSES[1:]:
            raise ValueError(f"a batch ends finished or interrupted, not {status!r}")
        with self._write() as session:
            batch = _batch_row(session, batch_id)
            _recount(session, batch)
            batch.status, batch.finished_at = status, now()
            return plain(batch)

    @retry_when_locked
    def resume_batch(self, batch_id: str) -> dict:
        """Mark an interrupted batch running again (for --resume); return it."""
        with self._write() as session:
            batch = _batch_row(session, batch_id)
            batch.status, batch.finished_at = "running", None
            return plain(batch)

    def get_batch(self, batch_id: str) -> dict | None:
        """A batch as a dict, or None."""
        with self._read() as session:
            batch = session.get(Batch, batch_id)
            return plain(batch) if batch else None

    def list_batches(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """Batches, newest first."""
        query = select(Batch).order_by(col(Batch.id).desc()).offset(offset).limit(limit)
        with self._read() as session:
            return [plain(batch) for batch in session.exec(query).all()]

    def finished_question_ids(self, batch_id: str, config: str, retry_errors: tuple[str, ...] = ()) -> set[str]:
        """Question ids whose run for this configuration (a strategy's own key is its name) has ended, less the
        error runs whose error names one of `retry_errors` (e.g. an unreachable server), which a resume runs again."""
        query = select(Run.question_id).where(*_ended_in_config(batch_id, config, retry_errors))
        with self._read() as session:
            return set(session.exec(query).all())

    def ended_runs(self, batch_id: str, config: str, retry_errors: tuple[str, ...] = ()) -> dict[str, dict]:
        """question_id -> run (a dict, without steps) of the runs finished_question_ids counts."""
        query = select(Run).where(*_ended_in_config(batch_id, config, retry_errors))
        with self._read() as session:
            return {run.question_id: plain(run) for run in session.exec(query).all()}

    def unfinished_runs(self, batch_id: str, config: str, retry_errors: tuple[str, ...] = ()) -> dict[str, str]:
        """question_id -> run id of runs still `running` in this configuration (or failed with one of
        `retry_errors`), so a resume can complete those same runs."""
        query = select(Run.question_id, Run.id).where(*_in_config(batch_id, config),
                                                      (Run.status == "running") | _failed_with(retry_errors))
        with self._read() as session:
            return {question_id: run_id for question_id, run_id in session.exec(query).all()}

    @retry_when_locked
    def start_config_run(self, config: str, question: str, strategy: str, *, sampling: dict | None = None,
                         **fields) -> str:
        """start_run for a batch question, its configuration's key written in the same transaction."""
        run = Run(id=new_id(), created_at=now(), strategy=strategy, question=question, config=config,
                  sampling_json=to_json(sampling), **fields)
        with self._write() as session:
            session.add(run)
        return run.id

    def config_metrics(self, batch_id: str) -> list[dict]:
        """Per configuration over the batch's ended runs: counts of scored, correct, answered, error, parse-error and
        tool-error runs, and summed tokens and time."""
        key = _config_key()
        failing_steps = lambda condition: col(Run.id).in_(select(Step.run_id).where(condition))  # noqa: E731
        query = (select(key, func.min(Run.strategy), func.count(), _count_if(col(Run.correct).is_not(None)),
                        _count_if(col(Run.correct).is_(True)), _count_if(Run.status == "ok"),
                        _count_if(Run.status == "error"), _count_if(failing_steps(Step.kind == "parse_error")),
                        _count_if(failing_steps((Step.kind == "tool") & col(Step.error).is_not(None))),
                        func.sum(Run.prompt_tokens + Run.completion_tokens), func.sum(Run.duration_ms))
                 .where(Run.batch_id == batch_id, Run.status != "running").group_by(key))
        names = ("config", "strategy", "total", "scored", "correct", "answered", "errors", "parse_errors",
                 "tool_errors", "tokens", "duration_ms")
        with self._read() as session:
            return [dict(zip(names, row)) for row in session.exec(query).all()]

    def config_runs(self, batch_id: str, config: str) -> dict[str, dict]:
        """question_id -> its ended run in this configuration (id, question, expected, answer, status, correct, tokens)."""
        query = select(Run).where(*_in_config(batch_id, config), Run.status != "running").order_by(RUN_SEQ)
        with self._read() as session:
            return {run.question_id: {"run_id": run.id, "question": run.question, "expected": run.expected,
                                      "answer": run.answer, "status": run.status, "correct": run.correct,
                                      "tokens": run.prompt_tokens + run.completion_tokens}
                    for run in session.exec(query).all()}

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


def _batch_row(session: Session, batch_id: str) -> Batch:
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise KeyError(f"no batch {batch_id!r}")
    return batch


def _recount(session: Session, batch: Batch) -> None:
    ended = (Run.batch_id == batch.id, Run.status != "running")
    count = select(func.count()).select_from(Run).where(*ended)
    batch.done = session.exec(count).one()
    batch.correct = session.exec(count.where(col(Run.correct).is_(True))).one()
    batch.errors = session.exec(count.where(Run.status == "error")).one()


def _config_key() -> sa.ColumnElement:
    """A run's configuration key: its own, or (a batch from before experiments) its strategy."""
    return func.coalesce(Run.config, Run.strategy)


def _in_config(batch_id: str, config: str) -> tuple:
    return Run.batch_id == batch_id, _config_key() == config, col(Run.question_id).is_not(None)


def _ended_in_config(batch_id: str, config: str, retry_errors: tuple[str, ...]) -> tuple:
    return *_in_config(batch_id, config), Run.status != "running", sa.not_(_failed_with(retry_errors))


def _failed_with(error_names: tuple[str, ...]) -> sa.ColumnElement:
    """SQL: the run ended `error` with an exception of one of these names (stored as "Name: message")."""
    if not error_names:
        return sa.false()
    return (Run.status == "error") & sa.or_(*(col(Run.error).startswith(f"{name}:") for name in error_names))


def _count_if(condition) -> sa.ColumnElement:
    """SQL: how many rows of the group meet `condition`."""
    return func.sum(sa.case((condition, 1), else_=0))
