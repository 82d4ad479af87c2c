"""The History page: search runs, open a trace, re-run it with another strategy or template, delete (after asking);
fork, branch, replay and compare (history_fork.py)."""
from __future__ import annotations

import html
import logging

import gradio as gr
import pandas as pd

from prompts.template import TemplateError

from ..errors import user_errors
from ..runner import STRATEGIES, StrategyOptions
from ..store import RUN_STATUSES
from . import history_fork
from .history_fork import FORKABLE
from .outcome import OUTCOMES, outcome_of, plain_status, status_line
from .state import SAMPLING_KEYS, AppState
from .trace_view import placeholder, render_run

log = logging.getLogger(__name__)

ANY = "any"
COLUMNS = ["id", "created", "strategy", "template", "status", "answer", "question"]
PICK = "Pick a run in the table or paste its id, then Open."


def search(state: AppState, text: str, strategy: str, status: str) -> pd.DataFrame:
    """Runs matching the filters, newest first; the status column carries the outcome's mark."""
    rows = state.store.search_runs(text=text or None, strategy=None if strategy == ANY else strategy,
                                   status=None if status == ANY else status, limit=200)
    return pd.DataFrame([[r["id"], (r["created_at"] or "")[:19].replace("T", " "), r["strategy"],
                          f"{r['template_name']}@{r['template_version']}", f"{outcome_of(r).mark} {outcome_of(r).key}",
                          "" if r["answer"] is None else str(r["answer"])[:40], r["question"][:100]] for r in rows],
                        columns=COLUMNS)


def open_run(state: AppState, run_id: str) -> tuple[str, str, str]:
    """(message, trace, re-run trace) for the id typed or picked; an unknown id says so and shows no trace."""
    run_id = (run_id or "").strip()
    if not run_id:
        return plain_status(PICK), placeholder(PICK), ""
    run = state.store.get_run(run_id)
    if run is None:
        return status_line(OUTCOMES["error"], f"No run with id <code>{html.escape(run_id)}</code>: it may have been "
                                              f"deleted. Search above, or paste an id from the table."), "", ""
    return "", render_run(run, FORKABLE), ""


def template_in_use(state: AppState, strategy: str, spec: str) -> str:
    """Which template version a re-run will use."""
    try:
        template = state.template(strategy, (spec or "").strip() or None)
    except TemplateError as exc:
        return status_line(OUTCOMES["error"], html.escape(str(exc)))
    return plain_status(f"A re-run will use <b>{template.name}@{template.version}</b>"
                        f"{'' if (spec or '').strip() else ' (its default version)'}.")


def rerun(state: AppState, run_id: str, strategy: str, template: str) -> tuple[str, str, str]:
    """The stored run and a fresh run of its question (its sampling kept) with another strategy/template."""
    run = state.store.get_run((run_id or "").strip())
    if run is None:
        return plain_status("Open a run first."), "", ""
    sampling = {k: v for k, v in (run.get("sampling") or {}).items() if k in SAMPLING_KEYS}
    try:
        new_id, _ = state.ask(run["question"], strategy, (template or "").strip() or None, sampling, StrategyOptions())
    except user_errors() as exc:
        return status_line(OUTCOMES["error"], f"Not run: {html.escape(str(exc))}"), render_run(run, FORKABLE), ""
    return "", render_run(run, FORKABLE), render_run(state.store.get_run(new_id), FORKABLE)


def ask_to_delete(state: AppState, run_id: str):
    """Delete asks first: the confirmation row, or a message when there is nothing to delete."""
    run_id = (run_id or "").strip()
    if not run_id or state.store.get_run(run_id) is None:
        return gr.update(visible=False), "", plain_status(f"No run with id {html.escape(run_id)!r} to delete.")
    question = html.escape(state.store.get_run(run_id)["question"][:80])
    return (gr.update(visible=True), f'<div class="confirm-text">Delete run <code>{run_id}</code> ("{question}") and '
                                     f'its trace? This cannot be undone.</div>', "")


def delete(state: AppState, run_id: str) -> tuple:
    """(confirm row, message, run id, trace, re-run trace) after deleting: nothing of the run stays on screen."""
    run_id = (run_id or "").strip()
    if not state.store.delete_run(run_id):
        return gr.update(visible=False), plain_status(f"No run with id {html.escape(run_id)!r}."), gr.update(), \
            gr.update(), gr.update()
    return gr.update(visible=False), plain_status(f"Deleted run {run_id}."), "", placeholder(PICK), ""


def refresh(state: AppState, text: str, strategy: str, status: str, new_strategy: str, new_template: str) -> tuple:
    """What the tab shows afresh when it opens: the runs, and which template a re-run would use."""
    return search(state, text, strategy, status), template_in_use(state, new_strategy, new_template)


def build(state: AppState) -> tuple[list, list]:
    """The History tab; returns the inputs and outputs of `refresh`, which the server runs when the tab opens."""
    with gr.Row():
        text = gr.Textbox(label="Search questions and answers", elem_id="hist-text", scale=3)
        strategy = gr.Dropdown([ANY, *STRATEGIES], value=ANY, label="Strategy", elem_id="hist-strategy")
        status = gr.Dropdown([ANY, *RUN_STATUSES], value=ANY, label="Status", elem_id="hist-status")
        go = gr.Button("Search", elem_id="hist-search")
    table = gr.Dataframe(search(state, "", ANY, ANY), label="Runs (click a row to open its trace)", interactive=False,
                         elem_id="hist-table")
    with gr.Row():
        run_id = gr.Textbox(label="Run id", elem_id="hist-run-id", scale=3)
        open_btn = gr.Button("Open", elem_id="hist-open")
        delete_btn = gr.Button("Delete…", variant="stop", elem_id="hist-delete")
    with gr.Row(visible=False, elem_id="hist-confirm") as confirm:
        confirm_text = gr.HTML("", elem_id="hist-confirm-text")
        really = gr.Button("Delete for good", variant="stop", elem_id="hist-delete-yes")
        keep = gr.Button("Keep it", elem_id="hist-delete-no")
    message = gr.HTML("", elem_id="hist-message")
    with gr.Row():
        new_strategy = gr.Dropdown(list(STRATEGIES), value="direct", label="Re-run with strategy",
                                   elem_id="hist-rerun-strategy")
        new_template = gr.Textbox(label="Template (NAME or NAME@VERSION; empty = the strategy's default version)",
                                  elem_id="hist-rerun-template")
        rerun_btn = gr.Button("Re-run", variant="primary", elem_id="hist-rerun")
    uses = gr.HTML(template_in_use(state, "direct", ""), elem_id="hist-rerun-uses")
    forks = history_fork.build()
    with gr.Row():
        left = gr.HTML(placeholder(PICK), elem_id="hist-trace")
        right = gr.HTML("", elem_id="hist-rerun-trace")

    def pick(frame: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        chosen = str(frame.iloc[row]["id"])
        return chosen, *open_run(state, chosen)

    filters = [text, strategy, status]
    do_search = lambda t, s, st: search(state, t, s, st)  # noqa: E731
    go.click(do_search, filters, table)
    text.submit(do_search, filters, table)
    table.select(pick, table, [run_id, message, left, right])
    for event in (open_btn.click, run_id.submit):
        event(lambda r: open_run(state, r), run_id, [message, left, right])
    for event in (new_strategy.change, new_template.change):
        event(lambda s, t: template_in_use(state, s, t), [new_strategy, new_template], uses)
    rerun_btn.click(lambda r, s, t: rerun(state, r, s, t), [run_id, new_strategy, new_template],
                    [message, left, right]).then(do_search, filters, table)
    delete_btn.click(lambda r: ask_to_delete(state, r), run_id, [confirm, confirm_text, message])
    keep.click(lambda: (gr.update(visible=False), plain_status("Nothing deleted.")), None, [confirm, message])
    really.click(lambda r: delete(state, r), run_id, [confirm, message, run_id, left, right]).then(
        do_search, filters, table)
    for event in history_fork.wire(state, forks, run_id, message, left, right):
        event.then(do_search, filters, table)
    return [*filters, new_strategy, new_template], [table, uses]
