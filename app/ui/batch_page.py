"""The Batch page: upload questions (checked at once), pick strategies and template versions, watch
results fill in (the batch list stays current on its own), accuracy, download in input order,
resume, and open any result's trace."""
from __future__ import annotations

import html
import logging
from collections.abc import Callable

import gradio as gr
import pandas as pd

from ..runner import STRATEGIES
from .batch_views import (
    ACCURACY_COLUMNS,
    RESULT_COLUMNS,
    accuracy,
    batches_table,
    chosen_templates,
    progress_line,
    results,
    template_options,
    templates_in_use,
    upload_check,
)
from .batches import BatchManager
from .outcome import OUTCOMES, plain_status, status_line
from .trace_view import placeholder, render_run

log = logging.getLogger(__name__)

TICK_S = 1.0
PICK_ROW = "Click a result row to open its trace here."


def _empty(message: str) -> tuple:
    return (message, pd.DataFrame(columns=RESULT_COLUMNS), None, pd.DataFrame(columns=ACCURACY_COLUMNS), None)


def refresh(manager: BatchManager, batch_id: str | None) -> tuple:
    """Progress line, results, accuracy plot and table, download file, the batch list, and whether to keep ticking."""
    ticking = gr.Timer(active=manager.any_running())
    listing = batches_table(manager)
    batch = manager.state.store.get_batch(batch_id) if batch_id else None
    if batch is None:
        message = plain_status("No batch selected.") if not batch_id else plain_status(f"No batch {html.escape(batch_id)}.")
        return (*_empty(message), listing, ticking)
    table = results(manager, batch)
    done = int((~table["status"].str.endswith("running")).sum()) if len(table) else 0
    acc = accuracy(manager, batch_id) if done else pd.DataFrame(columns=ACCURACY_COLUMNS)
    out = manager.out_path(batch_id)
    download = str(out) if out.is_file() and not manager.is_running(batch_id) else None
    return (progress_line(manager, batch, done), table, acc if done else None, acc, download, listing, ticking)


def start(manager: BatchManager, path: str | None, strategies: list[str], concurrency: float, max_tokens: float,
          specs: list[str]) -> tuple[str, dict]:
    """(message, batch list) after starting a batch, or why it was not started."""
    if not path:
        return status_line(OUTCOMES["error"], "Upload a JSONL or CSV file first."), gr.update()
    try:
        templates = chosen_templates(manager.state, strategies, specs)
        batch_id = manager.start(path, strategies, int(concurrency), sampling={"max_tokens": int(max_tokens or 256)},
                                 templates=templates)
    except (ValueError, OSError) as exc:  # TemplateError is a ValueError
        return status_line(OUTCOMES["error"], f"Not started: {html.escape(str(exc))}"), gr.update()
    return status_line(OUTCOMES["running"], f"Started batch {batch_id[-8:]}."), batch_id


def resume(manager: BatchManager, batch_id: str | None) -> tuple[str, dict]:
    try:
        manager.resume(batch_id or "")
    except (ValueError, OSError) as exc:
        return status_line(OUTCOMES["error"], f"Not resumed: {html.escape(str(exc))}"), gr.update()
    return status_line(OUTCOMES["running"], f"Resumed batch {(batch_id or '')[-8:]}."), batch_id


def open_result(manager: BatchManager, frame: pd.DataFrame, evt: gr.SelectData) -> str:
    """The trace of the clicked result row."""
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return render_run(manager.state.store.get_run(str(frame.iloc[row]["run id"])))


def build(manager: BatchManager) -> tuple[list, list, Callable]:
    """The Batch tab; returns (inputs, outputs, function) that refresh it when the page or tab opens."""
    state = manager.state
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Questions (JSONL or CSV: question, optional answer and id)",
                             file_types=[".jsonl", ".csv", ".json", ".ndjson"], type="filepath", elem_id="batch-file")
            checked = gr.HTML("", elem_id="batch-upload-check")
        with gr.Column():
            strategies = gr.CheckboxGroup(list(STRATEGIES), value=["direct"], label="Strategies", elem_id="batch-strategies")
            specs = gr.Dropdown(template_options(state), value=[], multiselect=True, elem_id="batch-templates",
                                label="Template versions (empty: each strategy's default)")
            uses = gr.HTML(templates_in_use(state, ["direct"], []), elem_id="batch-templates-uses")
            concurrency = gr.Slider(1, 8, value=2, step=1, label="Concurrency")
            max_tokens = gr.Number(256, precision=0, minimum=1, label="Max tokens per call", elem_id="batch-max-tokens")
            start_btn = gr.Button("Start batch", variant="primary", elem_id="batch-start")
    message = gr.HTML("", elem_id="batch-message")
    with gr.Row():
        picker = gr.Textbox(label="Selected batch (click one in the list)", interactive=False, elem_id="batch-picker",
                            scale=3)
        resume_btn = gr.Button("Resume", elem_id="batch-resume")
        stop_btn = gr.Button("Stop", variant="stop", elem_id="batch-stop")
    listing = gr.Dataframe(batches_table(manager), label="Batches (kept current while any runs)", interactive=False,
                           elem_id="batch-list", max_height=220)
    progress = gr.HTML("", elem_id="batch-progress")
    table = gr.Dataframe(pd.DataFrame(columns=RESULT_COLUMNS), label="Results, in input order (click a row for its trace)",
                         interactive=False, elem_id="batch-results")
    with gr.Row():
        plot = gr.BarPlot(None, x="strategy", y="accuracy", y_lim=[0, 1], label="Accuracy per strategy",
                          elem_id="batch-plot")
        acc_table = gr.Dataframe(pd.DataFrame(columns=ACCURACY_COLUMNS), headers=ACCURACY_COLUMNS, label="Accuracy",
                                 interactive=False, elem_id="batch-accuracy")
    download = gr.File(label="Results (OUT.jsonl, in input order)", interactive=False, elem_id="batch-download")
    trace = gr.HTML(placeholder(PICK_ROW), elem_id="batch-trace")
    timer = gr.Timer(TICK_S, active=manager.any_running())
    views = [progress, table, plot, acc_table, download, listing, timer]
    do_refresh = lambda b: refresh(manager, b)  # noqa: E731

    upload.change(upload_check, upload, checked)
    for event in (strategies.change, specs.change):
        event(lambda s, t: templates_in_use(state, s, t), [strategies, specs], uses)
    start_btn.click(lambda *a: start(manager, *a), [upload, strategies, concurrency, max_tokens, specs],
                    [message, picker]).then(do_refresh, picker, views)
    resume_btn.click(lambda b: resume(manager, b), picker, [message, picker]).then(do_refresh, picker, views)
    stop_btn.click(lambda b: plain_status("Stopping after the running questions; resume later." if manager.stop(b or "")
                                          else "That batch is not running."), picker, message)

    def pick(frame: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return str(frame.iloc[row]["id"])

    listing.select(pick, listing, picker).then(do_refresh, picker, views)
    timer.tick(do_refresh, picker, views)

    def select(frame: pd.DataFrame, evt: gr.SelectData):
        return open_result(manager, frame, evt)

    table.select(select, table, trace)
    on_open = lambda b: (*refresh(manager, b), gr.update(choices=template_options(state)))  # noqa: E731
    return [picker], [*views, specs], on_open
