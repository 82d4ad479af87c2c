"""The Batch page: upload questions, pick strategies, watch results fill in, accuracy, download, resume."""
from __future__ import annotations

import logging

import gradio as gr
import pandas as pd

from ..batch import summary
from ..runner import STRATEGIES
from .batches import BatchManager

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["question id", "strategy", "status", "answer", "expected", "correct", "tokens", "seconds", "question"]


def batch_choices(manager: BatchManager) -> list[tuple[str, str]]:
    """(label, id) for each batch, newest first."""
    return [(f"{b['id'][-8:]} · {b['input_name']} · {b['status']} · {b['done']}/{b['total']}", b["id"])
            for b in manager.state.store.list_batches(limit=50)]


def results(manager: BatchManager, batch_id: str) -> pd.DataFrame:
    """The batch's runs so far (finished ones and those still running)."""
    runs = manager.state.store.search_runs(batch_id=batch_id, limit=1000)
    rows = [[r["question_id"], r["strategy"], r["status"], r["answer"], r["expected"],
             {True: "✓", False: "✗"}.get(r["correct"], ""), r["prompt_tokens"] + r["completion_tokens"],
             round((r["duration_ms"] or 0) / 1000, 1), r["question"]] for r in reversed(runs)]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def accuracy(manager: BatchManager, batch_id: str) -> pd.DataFrame:
    rows = summary(manager.state.store, batch_id)
    return pd.DataFrame([{"strategy": r["strategy"], "accuracy": round(r["accuracy"] or 0.0, 3),
                          "answered": r["answered"], "total": r["total"]} for r in rows],
                        columns=["strategy", "accuracy", "answered", "total"])


def refresh(manager: BatchManager, batch_id: str | None):
    """Progress line, results table, accuracy plot and table, download file, timer state."""
    if not batch_id:
        return "*No batch selected.*", pd.DataFrame(columns=RESULT_COLUMNS), None, None, None, gr.Timer(active=False)
    batch = manager.state.store.get_batch(batch_id)
    if batch is None:
        return f"no batch {batch_id}", pd.DataFrame(columns=RESULT_COLUMNS), None, None, None, gr.Timer(active=False)
    table = results(manager, batch_id)
    done = int((table["status"] != "running").sum()) if len(table) else 0
    running = manager.is_running(batch_id)
    entry = manager.running.get(batch_id)
    state = "running" if running else ("failed" if entry and entry.error else batch["status"])
    if not running and state == "running":
        state = "interrupted (server stopped) — resume it"
    line = f"**Batch {batch_id[-8:]}** · {state} · **{done}/{batch['total']}** done"
    if entry and entry.error:
        line += f" · error: {entry.error}"
    if entry and entry.problems:
        line += f" · skipped rows: {'; '.join(entry.problems[:5])}"
    acc = accuracy(manager, batch_id) if done else None
    out = manager.out_path(batch_id)
    download = str(out) if out.is_file() and not running else None
    return line, table, acc, acc, download, gr.Timer(active=running)


def build(manager: BatchManager) -> None:
    """The Batch tab's components and events."""
    with gr.Row():
        upload = gr.File(label="Questions (JSONL or CSV: question, optional answer and id)", file_types=[".jsonl",
                         ".csv", ".json", ".ndjson"], type="filepath", elem_id="batch-file")
        with gr.Column():
            strategies = gr.CheckboxGroup(list(STRATEGIES), value=["direct"], label="Strategies",
                                          elem_id="batch-strategies")
            concurrency = gr.Slider(1, 8, value=2, step=1, label="Concurrency")
            max_tokens = gr.Number(256, precision=0, minimum=1, label="Max tokens per call",
                                   elem_id="batch-max-tokens")
            start = gr.Button("Start batch", variant="primary", elem_id="batch-start")
    message = gr.Markdown("", elem_id="batch-message")
    with gr.Row():
        picker = gr.Dropdown(batch_choices(manager), label="Batch", elem_id="batch-picker", scale=3)
        reload = gr.Button("Refresh list", elem_id="batch-reload")
        resume = gr.Button("Resume", elem_id="batch-resume")
        stop = gr.Button("Stop", variant="stop", elem_id="batch-stop")
    progress = gr.Markdown("", elem_id="batch-progress")
    table = gr.Dataframe(pd.DataFrame(columns=RESULT_COLUMNS), label="Results", interactive=False,
                         elem_id="batch-results")
    with gr.Row():
        plot = gr.BarPlot(None, x="strategy", y="accuracy", y_lim=[0, 1], label="Accuracy per strategy",
                          elem_id="batch-plot")
        acc_table = gr.Dataframe(None, label="Accuracy", interactive=False, elem_id="batch-accuracy")
    download = gr.File(label="Results (OUT.jsonl)", interactive=False, elem_id="batch-download")
    timer = gr.Timer(1.0, active=False)
    views = [progress, table, plot, acc_table, download, timer]

    def on_start(path, chosen, n, tokens):
        if not path:
            return "**Upload a JSONL or CSV file first.**", gr.update()
        try:
            batch_id = manager.start(path, chosen, int(n), sampling={"max_tokens": int(tokens or 256)})
        except (ValueError, OSError) as exc:
            return f"**Not started:** {exc}", gr.update()
        return f"started batch {batch_id}", gr.update(choices=batch_choices(manager), value=batch_id)

    def on_resume(batch_id):
        try:
            manager.resume(batch_id or "")
        except (ValueError, OSError) as exc:
            return f"**Not resumed:** {exc}", gr.update()
        return f"resumed batch {batch_id}", gr.update(choices=batch_choices(manager), value=batch_id)

    def on_stop(batch_id):
        stopped = manager.stop(batch_id or "")
        return "stopping after the running questions; resume later" if stopped else "that batch is not running"

    start.click(on_start, [upload, strategies, concurrency, max_tokens], [message, picker]).then(
        lambda b: refresh(manager, b), picker, views)
    resume.click(on_resume, picker, [message, picker]).then(lambda b: refresh(manager, b), picker, views)
    stop.click(on_stop, picker, message)
    reload.click(lambda b: gr.update(choices=batch_choices(manager), value=b), picker, picker)
    picker.input(lambda b: refresh(manager, b), picker, views)
    timer.tick(lambda b: refresh(manager, b), picker, views)
