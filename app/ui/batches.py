"""Batches the server runs in its own threads, so they go on when the browser tab closes.

One batch per input file runs at a time (a second Start on the same file is refused); the
uploaded file keeps its name; when a batch ends its OUT file is put in input order.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..batch import BatchJob, run_batch, start_or_resume
from ..batch_input import BatchInput, read_batch_input
from ..runner import StrategyOptions
from ..tools import wiki_problem, wiki_tool_factory
from .state import AppState

log = logging.getLogger(__name__)


@dataclass
class Running:
    thread: threading.Thread
    stop: threading.Event
    input_hash: str = ""
    error: str | None = None
    problems: list[str] = field(default_factory=list)


class BatchManager:
    """Starts, resumes and stops batches; one thread per batch, owned by the server process."""

    def __init__(self, state: AppState):
        self.state = state
        self.running: dict[str, Running] = {}
        self._lock = threading.Lock()  # held from the duplicate check to the launch: two Starts cannot both pass
        self.folder = Path(state.settings.home) / "batches"

    def start(self, upload: str, strategies: list[str], concurrency: int = 2, limit: int | None = None,
              sampling: dict | None = None, resume_id: str | None = None, templates: dict | None = None) -> str:
        """Start a batch on an uploaded file (copied under REASON_HOME, under its own name, so it can be resumed).

        `templates`: strategy -> NAME@VERSION (a strategy not named runs its default version). Returns the batch id.
        """
        if not strategies:
            raise ValueError("pick at least one strategy")
        if "react" in strategies and (problem := wiki_problem(self.state.settings)):
            raise ValueError(problem)
        source = read_batch_input(self._keep(Path(upload)) if resume_id is None else Path(upload))
        if not source.questions:
            raise ValueError(f"{Path(upload).name} has no usable question")
        job = BatchJob(source, list(dict.fromkeys(strategies)), self.folder / "pending.jsonl", concurrency, limit,
                       resume_id, StrategyOptions())
        templates = {s: spec for s, spec in (templates or {}).items() if spec}
        job.templates = {s: self.state.template(s, templates.get(s)) for s in job.strategies}
        sampling = sampling or {}
        settings = {"sampling": sampling, "self_consistency": 1, "model": str(self.state.engine.path), "ui": True,
                    "concurrency": concurrency, "limit": limit, "input_path": str(source.path), "templates": templates}
        with self._lock:
            self._refuse_duplicate(source)
            batch_id = start_or_resume(job, self.state.store, settings)
            job.out_path = self.out_path(batch_id)
            self._launch(batch_id, job, sampling, source)
        return batch_id

    def _keep(self, upload: Path) -> Path:
        """A copy of the upload that outlives Gradio's temporary folder, with the file's own name."""
        kept = self.folder / f"input-{_short_hash(upload)}" / upload.name
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(upload, kept)
        return kept

    def _refuse_duplicate(self, source: BatchInput) -> None:
        for batch_id, entry in self.running.items():
            if entry.thread.is_alive() and entry.input_hash == source.sha256:
                raise ValueError(f"batch {batch_id[-8:]} is already running on {source.path.name}: stop it or wait "
                                 f"for it to finish before starting another on the same file")

    def resume(self, batch_id: str) -> str:
        """Continue an interrupted batch with its stored input file and settings."""
        if self.is_running(batch_id):
            raise ValueError(f"batch {batch_id} is already running")
        batch = self.state.store.get_batch(batch_id)
        if batch is None:
            raise ValueError(f"no batch with id {batch_id}")
        settings = batch.get("settings") or {}
        if not settings.get("ui") or not settings.get("input_path") or not Path(settings["input_path"]).is_file():
            raise ValueError(f"batch {batch_id} was not started here; resume it with `reason batch --resume`")
        return self.start(settings["input_path"], batch["strategies"], settings.get("concurrency", 2),
                          settings.get("limit"), settings.get("sampling"), resume_id=batch_id,
                          templates=settings.get("templates"))

    def _launch(self, batch_id: str, job: BatchJob, sampling: dict, source: BatchInput) -> None:
        model, info = self.state.chat_model(sampling)
        wiki = wiki_tool_factory(self.state.settings, "auto") if "react" in job.strategies else None
        stop = threading.Event()

        def work():
            try:
                run_batch(job, self.state.store, batch_id, model, info, wiki, stop=stop)
            except Exception as exc:  # any failure ends this batch only; the page shows it
                log.exception("batch %s failed", batch_id)
                self.running[batch_id].error = f"{type(exc).__name__}: {exc}"
            finally:
                in_input_order(job.out_path, [q.id for q in job.questions], job.strategies)

        thread = threading.Thread(target=work, name=f"batch-{batch_id[-6:]}", daemon=True)
        self.running[batch_id] = Running(thread, stop, source.sha256, problems=source.problems)
        thread.start()

    def stop(self, batch_id: str) -> bool:
        """Ask a batch to stop after its running questions; it can be resumed later."""
        entry = self.running.get(batch_id)
        if entry is None or not entry.thread.is_alive():
            return False
        entry.stop.set()
        return True

    def is_running(self, batch_id: str) -> bool:
        entry = self.running.get(batch_id)
        return bool(entry and entry.thread.is_alive())

    def any_running(self) -> bool:
        return any(entry.thread.is_alive() for entry in list(self.running.values()))

    def out_path(self, batch_id: str) -> Path:
        return self.folder / f"{batch_id}.jsonl"


def in_input_order(path: Path, question_ids: list[str], strategies: list[str]) -> None:
    """Rewrite an OUT file (written as questions finished) in input order: question by question, strategy by strategy."""
    if not path.is_file():
        return
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    position = {qid: i for i, qid in enumerate(question_ids)}
    rank = {s: i for i, s in enumerate(strategies)}
    records.sort(key=lambda r: (position.get(r.get("id"), len(position)), rank.get(r.get("strategy"), len(rank))))
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
