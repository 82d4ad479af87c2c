"""The History page: search runs, open a trace, re-run it with another strategy or template, delete."""
from __future__ import annotations

import logging

import gradio as gr
import pandas as pd

from ..errors import user_errors
from ..runner import STRATEGIES, StrategyOptions
from ..store import RUN_STATUSES
from .render import render_run
from .state import SAMPLING_KEYS, AppState

log = logging.getLogger(__name__)

ANY = "any"
COLUMNS = ["id", "created", "strategy", "template", "status", "answer", "question"]


def search(state: AppState, text: str, strategy: str, status: str) -> pd.DataFrame:
    """Runs matching the filters, newest first."""
    rows = state.store.search_runs(text=text or None, strategy=None if strategy == ANY else strategy,
                                   status=None if status == ANY else status, limit=200)
    return pd.DataFrame([[r["id"], (r["created_at"] or "")[:19].replace("T", " "), r["strategy"],
                          f"{r['template_name']}@{r['template_version']}", r["status"],
                          "" if r["answer"] is None else str(r["answer"])[:40], r["question"][:100]] for r in rows],
                        columns=COLUMNS)


def open_run(state: AppState, run_id: str) -> str:
    if not run_id or not run_id.strip():
        return "*Pick a run in the table or paste its id.*"
    return render_run(state.store.get_run(run_id.strip()))


def rerun(state: AppState, run_id: str, strategy: str, template: str) -> tuple[str, str]:
    """The stored run and a fresh run of its question (its sampling kept) with another strategy/template."""
    run = state.store.get_run((run_id or "").strip())
    if run is None:
        return "*Open a run first.*", ""
    sampling = {k: v for k, v in (run.get("sampling") or {}).items() if k in SAMPLING_KEYS}
    try:
        new_id, _ = state.ask(run["question"], strategy, (template or "").strip() or None, sampling, StrategyOptions())
    except user_errors() as exc:
        return render_run(run), f"**Not run:** {exc}"
    return render_run(run), render_run(state.store.get_run(new_id))


def delete(state: AppState, run_id: str) -> str:
    if not run_id or not state.store.delete_run(run_id.strip()):
        return f"no run with id {run_id!r}"
    return f"deleted run {run_id.strip()}"


def build(state: AppState) -> tuple[gr.Dataframe, list]:
    """The History tab; returns the table and its filter inputs (the table is refreshed when the tab opens)."""
    with gr.Row():
        text = gr.Textbox(label="Search questions and answers", elem_id="hist-text", scale=3)
        strategy = gr.Dropdown([ANY, *STRATEGIES], value=ANY, label="Strategy", elem_id="hist-strategy")
        status = gr.Dropdown([ANY, *RUN_STATUSES], value=ANY, label="Status", elem_id="hist-status")
        go = gr.Button("Search", elem_id="hist-search")
    table = gr.Dataframe(search(state, "", ANY, ANY), label="Runs (click a row to open it)", interactive=False,
                         elem_id="hist-table")
    with gr.Row():
        run_id = gr.Textbox(label="Run id", elem_id="hist-run-id", scale=3)
        open_btn = gr.Button("Open", elem_id="hist-open")
        delete_btn = gr.Button("Delete", variant="stop", elem_id="hist-delete")
    message = gr.Markdown("", elem_id="hist-message")
    with gr.Row():
        new_strategy = gr.Dropdown(list(STRATEGIES), value="direct", label="Re-run with strategy",
                                   elem_id="hist-rerun-strategy")
        new_template = gr.Textbox(label="Template (NAME or NAME@VERSION; empty = the strategy's latest)",
                                  elem_id="hist-rerun-template")
        rerun_btn = gr.Button("Re-run", variant="primary", elem_id="hist-rerun")
    with gr.Row():
        left = gr.Markdown("", elem_id="hist-trace")
        right = gr.Markdown("", elem_id="hist-rerun-trace")

    def pick(frame: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        chosen = str(frame.iloc[row]["id"])
        return chosen, render_run(state.store.get_run(chosen)), ""

    filters = [text, strategy, status]
    do_search = lambda t, s, st: search(state, t, s, st)  # noqa: E731
    go.click(do_search, filters, table)
    text.submit(do_search, filters, table)
    table.select(pick, table, [run_id, left, right])
    open_btn.click(lambda r: (open_run(state, r), ""), run_id, [left, right])
    run_id.submit(lambda r: (open_run(state, r), ""), run_id, [left, right])
    rerun_btn.click(lambda r, s, t: rerun(state, r, s, t), [run_id, new_strategy, new_template], [left, right]).then(
        do_search, filters, table)
    delete_btn.click(lambda r: delete(state, r), run_id, message).then(do_search, filters, table)
    return table, filters
