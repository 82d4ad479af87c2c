"""Batch question answering: every question × strategy run, stored, scored and written to OUT.jsonl.

Runs go to the trace store as they start and finish, so an interrupted batch loses nothing and
`--resume` runs only the questions whose runs did not finish. Questions run concurrently
(bounded), so a batching backend sees them together.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from prompts.trace import RunInfo

from .batch_input import BatchInput, Question
from .runner import StrategyOptions, record_run
from .store import Store
from .store.database import valid_text

log = logging.getLogger(__name__)


@dataclass
class BatchJob:
    source: BatchInput
    strategies: list[str]
    out_path: Path
    concurrency: int = 4
    limit: int | None = None
    resume_id: str | None = None
    options: StrategyOptions = field(default_factory=StrategyOptions)
    templates: dict = field(default_factory=dict)  # strategy -> PromptTemplate (default: the shipped one)

    @property
    def questions(self) -> list[Question]:
        return self.source.questions[: self.limit] if self.limit else self.source.questions


@dataclass
class Progress:
    total: int
    done: int = 0
    correct: int = 0
    scored: int = 0
    tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, record: dict) -> None:
        self.done += 1
        self.tokens += record["tokens"]
        if record["correct"] is not None:
            self.scored += 1
            self.correct += bool(record["correct"])

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)


def start_or_resume(job: BatchJob, store: Store, settings: dict) -> str:
    """The batch id: a new batch, or the one being resumed (whose input must be the same file)."""
    if job.resume_id is None:
        return store.create_batch(job.source.path.name, job.source.sha256, job.strategies, settings,
                                  len(job.questions) * len(job.strategies))
    batch = store.get_batch(job.resume_id)
    if batch is None:
        raise ValueError(f"no batch with id {job.resume_id}; see `reason runs --batch` or the Batch page")
    if batch["input_hash"] != job.source.sha256:
        raise ValueError(f"batch {job.resume_id} was run on a different input file; resume it with the same file")
    store.resume_batch(job.resume_id)
    return job.resume_id


def pending_work(job: BatchJob, store: Store, batch_id: str) -> list[tuple[str, Question, str | None]]:
    """(strategy, question, run id left `running` by a crash) for every question without a finished run."""
    work = []
    for strategy in job.strategies:
        finished = store.finished_question_ids(batch_id, strategy)
        stale = store.unfinished_runs(batch_id, strategy)
        work += [(strategy, q, stale.get(q.id)) for q in job.questions if q.id not in finished]
    return work


def answer_one(store: Store, batch_id: str, strategy: str, question: Question, run_id: str | None,
               model: BaseChatModel, info: RunInfo, job: BatchJob, wiki_tool) -> dict:
    """Run, score and store one question (completing a run a crash left `running`); returns its OUT record."""
    run_id, trace, correct = record_run(store, question.question, strategy, model, info, job.templates.get(strategy),
                                        job.options, wiki_tool, expected=question.answer, batch_id=batch_id,
                                        question_id=question.id, run_id=run_id)
    return {"id": question.id, "question": question.question, "expected": question.answer, "predicted": trace.answer,
            "correct": correct, "status": trace.status, "error": trace.error, "strategy": strategy,
            "tokens": trace.prompt_tokens + trace.completion_tokens, "duration_ms": round(trace.duration_ms, 1),
            "run_id": run_id}


def run_batch(job: BatchJob, store: Store, batch_id: str, model: BaseChatModel, info: RunInfo,
              wiki_tool: Callable | None = None, on_record: Callable[[dict], None] | None = None,
              stop: threading.Event | None = None) -> str:
    """Run the pending work; returns the batch's final status (`finished` or `interrupted`).

    A question's failure the user caused is its run's error; a bug stops the batch (left `interrupted`,
    every started run stored) and is raised.
    """
    stop = stop or threading.Event()
    work = iter(pending_work(job, store, batch_id))
    status = "interrupted"
    with job.out_path.open("a", encoding="utf-8") as out, ThreadPoolExecutor(job.concurrency) as pool:
        running: set[Future] = set()
        try:
            while True:
                while len(running) < job.concurrency and not stop.is_set() and (item := next(work, None)):
                    running.add(pool.submit(answer_one, store, batch_id, *item, model, info, job, wiki_tool))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                failures = _write(finished, out, on_record)
                if failures:
                    raise failures[0]
            status = "interrupted" if stop.is_set() else "finished"
        except BaseException:  # Ctrl-C, or a bug in one question (its run is stored as an error)
            stop.set()
            log.warning("stopping: letting %d running question(s) finish", len(running))
            _write(running, out)  # waits for them; their failures were stored as error runs
            raise
        finally:
            store.update_batch_counts(batch_id)
            store.finish_batch(batch_id, status)
    return status


def _write(futures: set[Future], out, on_record: Callable[[dict], None] | None = None) -> list[BaseException]:
    """Wait for these questions, write the OUT records of those that ended; return the failures (bugs)."""
    failures = []
    for future in futures:
        if (failure := future.exception()) is not None:
            failures.append(failure)
            continue
        record = valid_text(future.result())  # the same text the store wrote, so OUT and the store agree
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
        if on_record:
            on_record(record)
    return failures


def summary(store: Store, batch_id: str) -> list[dict]:
    """Per strategy: accuracy, answered rate, mean tokens and latency, errors by kind."""
    rows = store.accuracy_by_strategy(batch_id)
    errors = Counter()
    for run in store.search_runs(batch_id=batch_id, status="error", limit=100_000):
        errors[(run["strategy"], (run.get("error") or "error").split(":", 1)[0])] += 1
    for row in rows:
        row["errors_by_kind"] = {kind: n for (strategy, kind), n in errors.items() if strategy == row["strategy"]}
    return rows
