"""The Experiments page: pick a batch, read its configuration × metric matrix (95% Wilson intervals) and the
chart of accuracy against tokens, diff two configurations question by question (each cell opens its trace),
and export the matrix as CSV or JSON lines."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr
import pandas as pd

from ..experiments_stats import batch_results, config_names
from .experiments_views import DIFF_COLUMNS, MATRIX_COLUMNS, batch_choices, chart, diff, export, matrix
from .state import AppState
from .trace_view import placeholder, render_run

PICK_CELL = "Click an A or B cell of the diff to open that run's trace here."


def show_batch(state: AppState, batch_id: str | None) -> tuple:
    """The matrix, the chart and the two configuration pickers (A: the first, B: the second) of a batch."""
    batch = state.store.get_batch(batch_id) if batch_id else None
    if batch is None:
        empty = gr.update(choices=[], value=None)
        return pd.DataFrame(columns=MATRIX_COLUMNS), chart([]), empty, empty
    results, names = batch_results(state.store, batch_id), config_names(batch)
    return (matrix(results), chart(results), gr.update(choices=names, value=names[0] if names else None),
            gr.update(choices=names, value=names[min(1, len(names) - 1)] if names else None))


def show_diff(state: AppState, batch_id: str | None, a: str | None, b: str | None, only_changed: bool) -> tuple:
    """The verdict line, the coloured per-question table and the run ids behind its cells."""
    if not (batch_id and a and b):
        return "", pd.DataFrame(columns=DIFF_COLUMNS), []
    table, run_ids, line = diff(state.store, batch_id, a, b, only_changed)
    return line, table, run_ids


def open_cell(state: AppState, run_ids: list, evt: gr.SelectData) -> str:
    """The trace behind a clicked cell: column A's run or B's (a question's own columns open A's)."""
    row, column = evt.index if isinstance(evt.index, (list, tuple)) else (evt.index, 0)
    if row >= len(run_ids):
        return placeholder(PICK_CELL)
    run_a, run_b = run_ids[row]
    run_id = run_b if DIFF_COLUMNS[column] == "B" else (run_a or run_b)
    return render_run(state.store.get_run(run_id)) if run_id else placeholder("That configuration did not run this question.")


def exported(state: AppState, batch_id: str | None, kind: str) -> str | None:
    if not batch_id:
        return None
    return str(export(state.store, batch_id, Path(state.settings.home) / "batches" / "exports", kind))


def build(state: AppState) -> tuple[list, list, Callable]:
    """The Experiments tab; returns (inputs, outputs, function) that refresh it when the page or tab opens."""
    with gr.Row():
        picker = gr.Dropdown(batch_choices(state.store), value=None, label="Batch (newest first)", scale=4,
                             elem_id="experiments-batch")
        refresh_btn = gr.Button("Refresh", elem_id="experiments-refresh", scale=1)
    table = gr.Dataframe(pd.DataFrame(columns=MATRIX_COLUMNS), label="Configurations × metrics (95% Wilson intervals)",
                         interactive=False, elem_id="experiments-matrix")
    plot = gr.HTML(chart([]), label="Accuracy against tokens", elem_id="experiments-chart")
    with gr.Row():
        csv_btn = gr.Button("Export CSV", elem_id="experiments-export-csv")
        jsonl_btn = gr.Button("Export JSONL", elem_id="experiments-export-jsonl")
        download = gr.File(label="Exported results", interactive=False, elem_id="experiments-export")
    with gr.Row():
        side_a = gr.Dropdown([], label="A", elem_id="experiments-a")
        side_b = gr.Dropdown([], label="B", elem_id="experiments-b")
        only_changed = gr.Checkbox(False, label="Only questions that changed", elem_id="experiments-only-changed")
    line = gr.HTML("", elem_id="experiments-verdict")
    cells = gr.Dataframe(pd.DataFrame(columns=DIFF_COLUMNS), label="Per question (click A or B for its trace)",
                         interactive=False, elem_id="experiments-diff")
    run_ids = gr.State([])
    trace = gr.HTML(placeholder(PICK_CELL), elem_id="experiments-trace")

    pickers = [picker, side_a, side_b, only_changed]
    picker.change(lambda b: show_batch(state, b), picker, [table, plot, side_a, side_b])
    for control in (side_a.change, side_b.change, only_changed.change):
        control(lambda *a: show_diff(state, *a), pickers, [line, cells, run_ids])

    def select(ids: list, evt: gr.SelectData) -> str:  # Gradio passes the click only to an annotated parameter
        return open_cell(state, ids, evt)

    cells.select(select, run_ids, trace)
    csv_btn.click(lambda b: exported(state, b, "csv"), picker, download)
    jsonl_btn.click(lambda b: exported(state, b, "jsonl"), picker, download)

    def refresh(batch_id: str | None):
        choices = batch_choices(state.store)
        chosen = batch_id if batch_id in {c[1] for c in choices} else (choices[0][1] if choices else None)
        return gr.update(choices=choices, value=chosen), *show_batch(state, chosen)

    refresh_btn.click(refresh, picker, [picker, table, plot, side_a, side_b])
    return [picker], [picker, table, plot, side_a, side_b], refresh
