"""The Prompt templates page: versions, edit YAML, preview the prompt with its token count, save,
diff, and promote a version to the default that runs when none is named.

Every list on the page is read again when the page or tab opens and after each change, so it
never offers stale versions; every message is replaced by the next action's.
"""
from __future__ import annotations

import difflib
import html
import logging

import gradio as gr

from prompts.template import TemplateError, parse_template, shipped_template_body, shipped_template_names

from ..templates import default_version, promote_template, save_template, sync_shipped
from .outcome import OUTCOMES, plain_status, status_line
from .state import AppState

log = logging.getLogger(__name__)

HEADERS = ["template", "version", "default", "created", "note"]


def versions_table(state: AppState) -> list[list]:
    """One row per stored template version; the default one is marked."""
    sync_shipped(state.store)
    rows = []
    for name in shipped_template_names():
        default = default_version(state.store, name)
        for v in state.store.template_versions(name):
            rows.append([name, v["version"], "default" if v["version"] == default else "", (v["created_at"] or "")[:19],
                         v["note"] or ""])
    return rows


def version_choices(state: AppState, name: str) -> list[int]:
    return [v["version"] for v in state.store.template_versions(name)]


def load_version(state: AppState, name: str, version: int | None) -> str:
    """The YAML body of NAME@VERSION (the newest when no version is picked)."""
    sync_shipped(state.store)
    version = version or state.store.latest_template_version(name)
    return state.store.get_template(name, int(version))


def default_line(state: AppState, name: str) -> str:
    """Which version runs when none is named, on every page."""
    version = default_version(state.store, name)
    return plain_status(f"Runs use <b>{html.escape(name)}@{version}</b> unless a version is picked (Chat's "
                        f"'default', History re-runs and batches without a version). Saving does not change this; "
                        f"promoting does.")


def _versions(state: AppState, name: str, value: int | None = None):
    """The Version, Diff-from and Diff-to dropdowns for a template (Version set to `value`, else the newest)."""
    choices = version_choices(state, name)
    current = value if value in choices else (choices[-1] if choices else None)
    return gr.update(choices=choices, value=current), gr.update(choices=choices), gr.update(choices=choices)


def refresh(state: AppState, name: str, version: int | None):
    """Everything that lists versions, read again: (table, version, diff from, diff to, default line)."""
    return (versions_table(state), *_versions(state, name, version), default_line(state, name))


def preview(state: AppState, body: str, question: str) -> str:
    """The exact prompt the engine would see for a sample question, with its token count."""
    try:
        messages = parse_template(body or "", source="editor").render(question or "What is 2 + 3?")
    except TemplateError as exc:
        return status_line(OUTCOMES["error"], f"Invalid template: <pre class='text'>{html.escape(str(exc))}</pre>")
    model, _ = state.chat_model({})
    text = model.prompt_text(messages)
    return (f"<b>{state.count_tokens(messages)} tokens</b> (with the model's chat template)"
            f"<pre class='text'>{html.escape(text)}</pre>")


def save(state: AppState, name: str, body: str, note: str):
    """Validate and save as the next version: (message, editor, preview, *refresh)."""
    try:
        version = save_template(state.store, name, body or "", (note or "").strip())
    except TemplateError as exc:
        return (status_line(OUTCOMES["error"], f"Not saved: <pre class='text'>{html.escape(str(exc))}</pre>"),
                gr.update(), gr.update(), *refresh(state, name, None))
    message = (f"Saved <b>{html.escape(name)}@{version}</b>. Runs still use {html.escape(name)}@"
               f"{default_version(state.store, name)} by default; promote it to change that.")
    return (status_line(OUTCOMES["ok"], message), load_version(state, name, version), "",
            *refresh(state, name, version))


def promote(state: AppState, name: str, version: int | None):
    """Make the picked version the default: (message, *refresh)."""
    try:
        promote_template(state.store, f"{name}@{int(version or 0)}")
    except (TemplateError, ValueError) as exc:
        return (status_line(OUTCOMES["error"], f"Not promoted: {html.escape(str(exc))}"), *refresh(state, name, version))
    return (status_line(OUTCOMES["ok"], f"<b>{html.escape(name)}@{version}</b> is now the default."),
            *refresh(state, name, version))


def diff(state: AppState, name: str, left: int | None, right: int | None) -> str:
    """Unified diff between two stored versions."""
    if not left or not right:
        return plain_status("Pick two versions to compare.")
    a, b = load_version(state, name, left), load_version(state, name, right)
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), f"{name}@{left}", f"{name}@{right}", lineterm=""))
    if not lines:
        return plain_status(f"{html.escape(name)}@{left} and {html.escape(name)}@{right} are identical.")
    return f"<pre class='text'>{html.escape(chr(10).join(lines))}</pre>"


def build(state: AppState) -> tuple[list, list]:
    """The templates tab; returns (inputs, outputs) of `refresh`, which the server runs when the page or tab opens."""
    names = shipped_template_names()
    first = names[0] if names else None
    table = gr.Dataframe(versions_table(state), headers=HEADERS, label="Templates and versions", interactive=False,
                         elem_id="tpl-table")
    with gr.Row():
        name = gr.Dropdown(names, value=first, label="Template", elem_id="tpl-name")
        version = gr.Dropdown(version_choices(state, first) if first else [], label="Version", elem_id="tpl-version")
        load = gr.Button("Load", elem_id="tpl-load")
        promote_btn = gr.Button("Make this version the default", elem_id="tpl-promote")
        reset = gr.Button("Reset editor to shipped v1", elem_id="tpl-reset")
    default = gr.HTML(default_line(state, first) if first else "", elem_id="tpl-default")
    editor = gr.Code(load_version(state, first, None) if first else "", language="yaml", label="YAML",
                     interactive=True, lines=16, elem_id="tpl-editor")
    with gr.Row():
        note = gr.Textbox(label="Note for the new version", elem_id="tpl-note")
        save_btn = gr.Button("Save as new version", variant="primary", elem_id="tpl-save")
    message = gr.HTML("", elem_id="tpl-message")
    with gr.Row():
        sample = gr.Textbox("Tom has 3 apples and buys 4 more. How many?", label="Sample question", elem_id="tpl-sample")
        preview_btn = gr.Button("Preview prompt", elem_id="tpl-preview")
    rendered = gr.HTML("", elem_id="tpl-rendered")
    with gr.Row():
        left = gr.Dropdown(version_choices(state, first) if first else [], label="Diff: from", elem_id="tpl-diff-a")
        right = gr.Dropdown(version_choices(state, first) if first else [], label="to", elem_id="tpl-diff-b")
        diff_btn = gr.Button("Diff", elem_id="tpl-diff")
    diff_out = gr.HTML("", elem_id="tpl-diff-out")
    listing = [table, version, left, right, default]

    def pick(n):
        return (load_version(state, n, None), "", "", "", *refresh(state, n, None))

    name.change(pick, name, [editor, message, rendered, diff_out, *listing])
    for event in (load.click, version.input):  # picking a version shows it: the editor never disagrees with the picker
        event(lambda n, v: (load_version(state, n, v), "", ""), [name, version], [editor, message, rendered])
    reset.click(lambda n: (shipped_template_body(n), gr.update(value=1),
                           plain_status("Editor reset to the shipped version 1 (not saved)."), ""),
                name, [editor, version, message, rendered])
    save_btn.click(lambda n, b, t: save(state, n, b, t), [name, editor, note], [message, editor, rendered, *listing])
    promote_btn.click(lambda n, v: promote(state, n, v), [name, version], [message, *listing])
    preview_btn.click(lambda b, q: preview(state, b, q), [editor, sample], rendered)
    diff_btn.click(lambda n, a, b: diff(state, n, a, b), [name, left, right], diff_out)
    return [name, version], listing
