"""Batches: one row per `reason batch`, its counts recomputed from its runs; per-strategy accuracy; resume queries."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from .database import Database, retry_when_locked
from .models import BATCH_STATUSES, Batch, Run, now, plain, to_json
from .runs import new_id


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


def _count_if(condition) -> sa.ColumnElement:
    """SQL: how many rows of the group meet `condition`."""
    return func.sum(sa.case((condition, 1), else_=0))
