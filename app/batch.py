"""Batch question answering: every question × configuration run, stored, scored and written to OUT.jsonl.

A configuration (app/experiments.py) is a strategy with its template version, model and sampling
settings; a plain batch has one per strategy. Runs go to the trace store as they start and finish, so an
interrupted batch loses nothing and `--resume` runs only what did not finish (and what failed because a
server was unreachable). Questions run concurrently (bounded), so a batching backend sees them together.
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

from prompts.template import PromptTemplate
from prompts.trace import RunInfo

from .batch_input import BatchInput, Question
from .errors import user_errors
from .experiments import Configuration, strategy_configs
from .experiments_stats import batch_results, config_names
from .fanout import TRANSIENT_ERROR_NAMES
from .runner import StrategyOptions, record_run
from .store import Store
from .store.database import valid_text

log = logging.getLogger(__name__)

Models = Callable[[Configuration], tuple[BaseChatModel, RunInfo]]


@dataclass
class BatchJob:
    source: BatchInput
    strategies: list[str]
    out_path: Path
    concurrency: int = 4
    limit: int | None = None
    resume_id: str | None = None
    options: StrategyOptions = field(default_factory=StrategyOptions)
    templates: dict = field(default_factory=dict)  # configuration name (a plain strategy's: itself) -> PromptTemplate
    configs: list[Configuration] = field(default_factory=list)  # empty: one per strategy, with `options`

    def __post_init__(self):
        self.configs = self.configs or strategy_configs(self.strategies, self.options)
        self.strategies = list(dict.fromkeys(c.strategy for c in self.configs))

    @property
    def questions(self) -> list[Question]:
        return self.source.questions[: self.limit] if self.limit else self.source.questions


@dataclass
class Arm:
    """A configuration ready to run: its model, template and options."""

    config: Configuration
    model: BaseChatModel
    info: RunInfo
    template: PromptTemplate | None
    options: StrategyOptions


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
    """The batch id: a new batch, or the one being resumed (same input file, same configurations)."""
    if job.resume_id is None:
        settings = {**settings, "configurations": [c.to_dict() for c in job.configs]}
        return store.create_batch(job.source.path.name, job.source.sha256, job.strategies, settings,
                                  len(job.questions) * len(job.configs))
    batch = store.get_batch(job.resume_id)
    if batch is None:
        raise ValueError(f"no batch with id {job.resume_id}; see `reason batches` or the Batch page")
    if batch["input_hash"] != job.source.sha256:
        raise ValueError(f"batch {job.resume_id} was run on a different input file; resume it with the same file")
    if set(config_names(batch)) != {c.name for c in job.configs}:
        raise ValueError(f"batch {job.resume_id} runs {', '.join(config_names(batch))}, not "
                         f"{', '.join(c.name for c in job.configs)}; resume it with the same configurations")
    store.resume_batch(job.resume_id)
    return job.resume_id


def pending_work(job: BatchJob, store: Store, batch_id: str) -> list[tuple[str, Question, str | None]]:
    """(configuration name, question, run id to complete) for every question without a finished run, question by
    question so that an interrupted experiment has its configurations on the same questions.

    The run id is that of a run a crash left `running`, or one that failed only because a server was unreachable."""
    finished, stale = {}, {}
    for config in job.configs:
        finished[config.name] = store.finished_question_ids(batch_id, config.name, TRANSIENT_ERROR_NAMES)
        stale[config.name] = store.unfinished_runs(batch_id, config.name, TRANSIENT_ERROR_NAMES)
    return [(c.name, q, stale[c.name].get(q.id)) for q in job.questions for c in job.configs
            if q.id not in finished[c.name]]


def arms(job: BatchJob, model: BaseChatModel | None, info: RunInfo, models: Models | None = None) -> dict[str, Arm]:
    """Each configuration with its model: `models(config)` when given, else the one `model` for all."""
    out = {}
    for config in job.configs:
        config_model, config_info = models(config) if models else (model, info)
        out[config.name] = Arm(config, config_model, config_info, job.templates.get(config.name),
                               config.options(job.options))
    return out


class _InConfig:
    """The store as record_run sees it for one configuration: runs it starts carry the configuration's name."""

    def __init__(self, store: Store, config: str):
        self._store, self._config = store, config

    def start_run(self, question: str, strategy: str, **fields) -> str:
        return self._store.start_config_run(self._config, question, strategy, **fields)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def answer_one(store: Store, batch_id: str, arm: Arm, question: Question, run_id: str | None, wiki_tool) -> dict:
    """Run, score and store one question (completing a run left unfinished); returns its OUT record."""
    config = arm.config
    run_id, trace, correct = record_run(_InConfig(store, config.name), question.question, config.strategy, arm.model,
                                        arm.info, arm.template, arm.options, wiki_tool, expected=question.answer,
                                        batch_id=batch_id, question_id=question.id, run_id=run_id)
    return out_record(question, config, {"id": run_id, "answer": trace.answer, "correct": correct,
                                         "status": trace.status, "error": trace.error,
                                         "prompt_tokens": trace.prompt_tokens,
                                         "completion_tokens": trace.completion_tokens,
                                         "duration_ms": trace.duration_ms})


def out_record(question: Question, config: Configuration, run: dict) -> dict:
    """The OUT line of a question's run (the fields of a stored run that it reports)."""
    return {"id": question.id, "question": question.question, "expected": question.answer, "predicted": run["answer"],
            "correct": run["correct"], "status": run["status"], "error": run["error"], "strategy": config.strategy,
            "config": config.name, "tokens": run["prompt_tokens"] + run["completion_tokens"],
            "duration_ms": round(run["duration_ms"], 1), "run_id": run["id"]}


def records_missing_from_out(job: BatchJob, store: Store, batch_id: str) -> list[dict]:
    """OUT records of the batch's ended runs that OUT lacks, in question order. A run is stored before its line
    is written, so a batch killed in between would otherwise keep the run and never write the line (the resume
    skips ended runs). A last line cut off by the kill is removed from OUT here; its run's line is among these."""
    if job.resume_id is None:  # a new batch has no ended runs
        return []
    written = {(record.get("id"), record.get("config", record.get("strategy"))) for record in _complete_lines(job.out_path)}
    ended = {config.name: store.ended_runs(batch_id, config.name, TRANSIENT_ERROR_NAMES) for config in job.configs}
    return [out_record(question, config, ended[config.name][question.id])
            for question in job.questions for config in job.configs
            if question.id in ended[config.name] and (question.id, config.name) not in written]


def _complete_lines(path: Path) -> list[dict]:
    """OUT's records, after cutting off an unfinished last line (no newline: the writer was killed mid-line)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[:data.rfind(b"\n") + 1]
        with path.open("r+b") as f:
            f.truncate(len(data))
    records = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # not a record of ours
        if isinstance(record, dict):
            records.append(record)
    return records


def run_batch(job: BatchJob, store: Store, batch_id: str, model: BaseChatModel | None = None, info: RunInfo = RunInfo(),
              wiki_tool: Callable | None = None, on_record: Callable[[dict], None] | None = None,
              stop: threading.Event | None = None, models: Models | None = None) -> str:
    """Run the pending work; returns the batch's final status (`finished` or `interrupted`).

    Every configuration talks to `model`, or to its own from `models`. A question's failure the user caused
    is its run's error; a bug stops the batch (left `interrupted`, every started run stored) and is raised.
    """
    stop = stop or threading.Event()
    user_errors()  # imported here, once: a first import racing in the workers hands others half-built modules (httpx)
    ready = arms(job, model, info, models)
    work = iter(pending_work(job, store, batch_id))
    status = "interrupted"
    missing = records_missing_from_out(job, store, batch_id)
    with job.out_path.open("a", encoding="utf-8") as out, ThreadPoolExecutor(job.concurrency) as pool:
        for record in missing:  # ended before an interruption, not yet in OUT
            out.write(json.dumps(valid_text(record), ensure_ascii=False) + "\n")
        out.flush()
        running: set[Future] = set()
        try:
            while True:
                while len(running) < job.concurrency and not stop.is_set() and (item := next(work, None)):
                    name, question, run_id = item
                    running.add(pool.submit(answer_one, store, batch_id, ready[name], question, run_id, wiki_tool))
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
    """Per configuration: ConfigResult's fields (accuracy and its interval, rates, tokens, latency), errors by kind."""
    errors = Counter()
    for run in store.search_runs(batch_id=batch_id, status="error", limit=100_000):
        errors[(run.get("config") or run["strategy"], (run.get("error") or "error").split(":", 1)[0])] += 1
    rows = [r.to_dict() for r in batch_results(store, batch_id)]
    for row in rows:
        row["errors_by_kind"] = {kind: n for (config, kind), n in errors.items() if config == row["config"]}
    return rows
