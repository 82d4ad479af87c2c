"""History's fork controls: Fork here (a step edited in place) and Branch here (a token's alternative),
both sent by page.js from the trace as one JSON action; Compare with… another run; Replay.

Each result is shown side by side: the run on the left, the fork, replay or other run on the right,
the steps that match greyed and the first divergence marked. The web app numbers steps from 1, as
its cards do (the CLI from 0).
"""
from __future__ import annotations

import html
import json
import logging
from dataclasses import replace
from types import SimpleNamespace

import gradio as gr

from prompts.template import TemplateError

from ..errors import user_errors
from ..fork import Edit, branch, fork, knob_values, replay
from ..lineage import lineage_line
from ..run_diff import diff_runs
from ..templates import load_template
from ..tools import wiki_tool_factory
from .outcome import OUTCOMES, outcome_of, plain_status, status_line
from .state import AppState
from .trace_view import Marks, diff_marks, render_run

log = logging.getLogger(__name__)
FORKABLE = Marks(forkable=True)  # History's traces can be forked


def side_by_side(a: dict, b: dict) -> tuple[str, str]:
    """Both traces with the steps that match greyed and where they part marked (both can be forked further)."""
    marks = replace(diff_marks(diff_runs(a, b)), forkable=True)
    return render_run(a, marks), render_run(b, marks)


def act(state: AppState, run_id: str, action: str, template: str = "", temperature: str = "",
        seed: str = "") -> tuple[str, str, str]:
    """Run a fork or branch sent from a trace: {"action": "fork"|"branch", "run", "step", "text"|"token"+"alternative"}."""
    try:
        request = json.loads(action or "{}")
        parent_id = str(request.get("run") or run_id or "").strip()
        model, info = _model(state, parent_id, temperature, seed)
        kwargs = {"template": load_template(state.store, template.strip()) if (template or "").strip() else None,
                  "wiki_tool": lambda: wiki_tool_factory(state.settings, "auto")()}
        if request.get("action") == "branch":
            recorded = branch(state.store, parent_id, int(request["step"]), int(request["token"]),
                              str(request["alternative"]), model, info, **kwargs)
        else:
            recorded = fork(state.store, parent_id, int(request["step"]), model, info,
                            edit=Edit(str(request["text"])), **kwargs)
    except (*user_errors(), TemplateError, KeyError, json.JSONDecodeError) as exc:
        return status_line(OUTCOMES["error"], f"Not forked: {html.escape(str(exc))}"), gr.update(), gr.update()
    return _shown(state, parent_id, recorded.run_id, "Forked")


def do_replay(state: AppState, run_id: str) -> tuple[str, str, str]:
    """Run the open run again with its template, sampling and recorded tool results; say whether it was identical."""
    run_id = (run_id or "").strip()
    try:
        model, info = _model(state, run_id)
        recorded = replay(state.store, run_id, model, info, lambda: wiki_tool_factory(state.settings, "auto")())
    except user_errors() as exc:
        return status_line(OUTCOMES["error"], f"Not replayed: {html.escape(str(exc))}"), gr.update(), gr.update()
    return _shown(state, run_id, recorded.run_id, "Replayed")


def compare(state: AppState, run_id: str, other_id: str) -> tuple[str, str, str]:
    """The open run beside another, with the first divergence and the answers and outcomes compared."""
    runs = [state.store.get_run((i or "").strip()) for i in (run_id, other_id)]
    if None in runs:
        missing = (run_id if runs[0] is None else other_id) or ""
        return plain_status(f"No run with id {html.escape(missing.strip())!r} to compare."), gr.update(), gr.update()
    return (plain_status(summary(diff_runs(*runs))), *side_by_side(*runs))


def summary(difference: dict) -> str:
    """The comparison in one line: where the runs part (in card numbers), their answers and outcomes."""
    first = difference["first_divergence"]
    if first is None:
        where = "The runs match step for step"
    else:
        token = "" if first["token"] is None else f", {first['unit']} {first['token']}"
        where = f"First divergence at step {first['step'] + 1} ({first['part']}{token})"
    answers, outcomes = difference["answers"], difference["outcomes"]
    shown = [html.escape(str(a)) if a is not None else "(no answer)" for a in (answers["a"], answers["b"])]
    return (f"{where} · answers {shown[0]} | {shown[1]} ({'the same' if answers['same'] else 'different'}) · "
            f"outcomes {outcome_of(outcomes['a']).word} | {outcome_of(outcomes['b']).word}")


def _model(state: AppState, run_id: str, temperature: str = "", seed: str = ""):
    """The loaded model with the run's sampling, and the temperature or seed typed on the page (empty: the run's)."""
    run = state.store.get_run(run_id)
    if run is None:
        raise ValueError(f"no run with id {run_id}")
    sampling = knob_values(run.get("sampling") or {})
    for name, text, kind in (("temperature", temperature, float), ("seed", seed, int)):
        if (text or "").strip():
            try:
                sampling[name] = kind(text.strip())
            except ValueError as exc:
                raise ValueError(f"{name} must be a number, got {text.strip()!r}") from exc
    return state.chat_model(sampling)


def _shown(state: AppState, parent_id: str, child_id: str, verb: str) -> tuple[str, str, str]:
    parent, child = state.store.get_run(parent_id), state.store.get_run(child_id)
    answer = html.escape(str(child["answer"])) if child["answer"] is not None else "(no answer)"
    message = status_line(outcome_of(child), f"{verb}: run <code>{child_id}</code>, {html.escape(lineage_line(child, 1))} "
                                             f"· answer <b>{answer}</b>")
    return (message, *side_by_side(parent, child))


def build() -> SimpleNamespace:
    """The fork options, Replay and Compare with… (wired by `wire` once the traces exist)."""
    with gr.Row():
        template = gr.Textbox(label="Fork with template (NAME@VERSION; empty = the run's own)", elem_id="hist-fork-template")
        temperature = gr.Textbox(label="Fork with temperature (empty = the run's)", elem_id="hist-fork-temperature")
        seed = gr.Textbox(label="Fork with seed (empty = the run's)", elem_id="hist-fork-seed")
        replay_btn = gr.Button("Replay", elem_id="hist-replay")
    with gr.Row():
        other = gr.Textbox(label="Compare with… (another run's id)", elem_id="hist-compare-id", scale=3)
        compare_btn = gr.Button("Compare", elem_id="hist-compare")
    # page.js writes a trace's Fork here / Branch here as JSON into this box and presses the button
    action = gr.Textbox(visible="hidden", elem_id="hist-action")
    go = gr.Button("Run the fork", visible="hidden", elem_id="hist-action-go")
    return SimpleNamespace(template=template, temperature=temperature, seed=seed, replay=replay_btn, other=other,
                           compare=compare_btn, action=action, go=go)


def wire(state: AppState, c: SimpleNamespace, run_id, message, left, right) -> list:
    """Connect the controls; returns the events that add a run (the page then lists runs afresh)."""
    outputs = [message, left, right]
    c.compare.click(lambda r, o: compare(state, r, o), [run_id, c.other], outputs)
    c.other.submit(lambda r, o: compare(state, r, o), [run_id, c.other], outputs)
    fork_inputs = [run_id, c.action, c.template, c.temperature, c.seed]
    return [c.go.click(lambda r, a, t, temp, s: act(state, r, a, t, temp, s), fork_inputs, outputs),
            c.replay.click(lambda r: do_replay(state, r), run_id, outputs)]
