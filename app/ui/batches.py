"""Batches the server runs in its own threads, so they go on when the browser tab closes."""
from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..batch import BatchJob, run_batch, start_or_resume
from ..batch_input import read_batch_input
from ..runner import StrategyOptions
from ..tools import wiki_tool_factory
from .state import AppState

log = logging.getLogger(__name__)


@dataclass
class Running:
    thread: threading.Thread
    stop: threading.Event
    error: str | None = None
    problems: list[str] = field(default_factory=list)


class BatchManager:
    """Starts, resumes and stops batches; one thread per batch, owned by the server process."""

    def __init__(self, state: AppState):
        self.state = state
        self.running: dict[str, Running] = {}
        self._lock = threading.Lock()
        self.folder = Path(state.settings.home) / "batches"

    def start(self, upload: str, strategies: list[str], concurrency: int = 2, limit: int | None = None,
              sampling: dict | None = None, resume_id: str | None = None) -> str:
        """Start a batch on an uploaded file (copied under REASON_HOME so it can be resumed); its id."""
        if not strategies:
            raise ValueError("pick at least one strategy")
        self.folder.mkdir(parents=True, exist_ok=True)
        source_path = Path(upload)
        if resume_id is None:
            kept = self.folder / f"input-{_short_hash(source_path)}{source_path.suffix.lower()}"
            shutil.copyfile(source_path, kept)  # Gradio's upload folder is temporary
            source_path = kept
        source = read_batch_input(source_path)
        if not source.questions:
            raise ValueError(f"{Path(upload).name} has no usable question")
        job = BatchJob(source, list(dict.fromkeys(strategies)), self.folder / "pending.jsonl", concurrency, limit,
                       resume_id, StrategyOptions())
        job.templates = {s: self.state.template(s, None) for s in job.strategies}
        sampling = sampling or {}
        batch_id = start_or_resume(job, self.state.store, {
            "sampling": sampling, "self_consistency": 1, "model": str(self.state.engine.path),
            "concurrency": concurrency, "limit": limit, "input_path": str(source_path), "ui": True})
        job.out_path = self.out_path(batch_id)
        self._launch(batch_id, job, sampling, source.problems)
        return batch_id

    def resume(self, batch_id: str) -> str:
        """Continue an interrupted batch with its stored input file and settings."""
        if self.is_running(batch_id):
            raise ValueError(f"batch {batch_id} is already running")
        batch = self.state.store.get_batch(batch_id)
        if batch is None:
            raise ValueError(f"no batch with id {batch_id}")
        settings = batch.get("settings") or {}
        if not settings.get("input_path") or not Path(settings["input_path"]).is_file():
            raise ValueError(f"batch {batch_id} was not started here; resume it with `reason batch --resume`")
        return self.start(settings["input_path"], batch["strategies"], settings.get("concurrency", 2),
                          settings.get("limit"), settings.get("sampling"), resume_id=batch_id)

    def _launch(self, batch_id: str, job: BatchJob, sampling: dict, problems: list[str]) -> None:
        model, info = self.state.chat_model(sampling)
        wiki = wiki_tool_factory(self.state.settings, "auto") if "react" in job.strategies else None
        stop = threading.Event()

        def work():
            try:
                run_batch(job, self.state.store, batch_id, model, info, wiki, stop=stop)
            except Exception as exc:  # any failure ends this batch only; the page shows it
                log.exception("batch %s failed", batch_id)
                self.running[batch_id].error = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=work, name=f"batch-{batch_id[-6:]}", daemon=True)
        with self._lock:
            self.running[batch_id] = Running(thread, stop, problems=problems)
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

    def out_path(self, batch_id: str) -> Path:
        return self.folder / f"{batch_id}.jsonl"


def _short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
