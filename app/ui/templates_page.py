"""The Prompt templates page: list versions, edit YAML, preview the prompt with its token count, save, diff."""
from __future__ import annotations

import difflib
import logging

import gradio as gr

from prompts.template import TemplateError, parse_template, shipped_template_body, shipped_template_names

from ..templates import save_template, sync_shipped
from .render import fenced
from .state import AppState

log = logging.getLogger(__name__)


def versions_table(state: AppState) -> list[list]:
    """One row per stored template version."""
    sync_shipped(state.store)
    rows = []
    for name in shipped_template_names():
        for v in state.store.template_versions(name):
            rows.append([name, v["version"], (v["created_at"] or "")[:19], v["note"] or ""])
    return rows


def version_choices(state: AppState, name: str) -> list[int]:
    return [v["version"] for v in state.store.template_versions(name)]


def load_version(state: AppState, name: str, version: int | None) -> str:
    """The YAML body of NAME@VERSION (the latest when no version is picked)."""
    sync_shipped(state.store)
    version = version or state.store.latest_template_version(name)
    return state.store.get_template(name, int(version))


def preview(state: AppState, body: str, question: str) -> str:
    """The exact prompt the engine would see for a sample question, with its token count."""
    try:
        template = parse_template(body or "", source="editor")
        messages = template.render(question or "What is 2 + 3?")
    except TemplateError as exc:
        return f"**Invalid template:** {exc}"
    model, _ = state.chat_model({})
    text = model.prompt_text(messages)
    tokens = len(state.engine.tokenizer.encode(text))
    return f"**{tokens} tokens** (with the model's chat template)\n\n{fenced(text)}"


def save(state: AppState, name: str, body: str, note: str):
    """Validate and save as the next version; a clear message and nothing saved when invalid."""
    try:
        version = save_template(state.store, name, body or "", (note or "").strip())
    except TemplateError as exc:
        return f"**Not saved:** {exc}", gr.update(), versions_table(state)
    choices = version_choices(state, name)
    return f"✅ saved **{name}@{version}**", gr.update(choices=choices, value=version), versions_table(state)


def diff(state: AppState, name: str, left: int | None, right: int | None) -> str:
    """Unified diff between two stored versions."""
    if not left or not right:
        return "*Pick two versions to compare.*"
    a, b = load_version(state, name, left), load_version(state, name, right)
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), f"{name}@{left}", f"{name}@{right}", lineterm=""))
    return fenced("\n".join(lines), "diff") if lines else f"*{name}@{left} and {name}@{right} are identical.*"


def build(state: AppState) -> gr.Dataframe:
    """The templates tab; returns the versions table (refreshed when the tab opens)."""
    names = shipped_template_names()
    first = names[0] if names else None
    table = gr.Dataframe(versions_table(state), headers=["template", "version", "created", "note"],
                         label="Templates and versions", interactive=False, elem_id="tpl-table")
    with gr.Row():
        name = gr.Dropdown(names, value=first, label="Template", elem_id="tpl-name")
        version = gr.Dropdown(version_choices(state, first) if first else [], label="Version", elem_id="tpl-version")
        load = gr.Button("Load", elem_id="tpl-load")
        reset = gr.Button("Reset editor to shipped v1", elem_id="tpl-reset")
    editor = gr.Code(load_version(state, first, None) if first else "", language="yaml", label="YAML",
                     interactive=True, lines=16, elem_id="tpl-editor")
    with gr.Row():
        note = gr.Textbox(label="Note for the new version", elem_id="tpl-note")
        save_btn = gr.Button("Save as new version", variant="primary", elem_id="tpl-save")
    message = gr.Markdown("", elem_id="tpl-message")
    with gr.Row():
        sample = gr.Textbox("Tom has 3 apples and buys 4 more. How many?", label="Sample question",
                            elem_id="tpl-sample")
        preview_btn = gr.Button("Preview prompt", elem_id="tpl-preview")
    rendered = gr.Markdown("", elem_id="tpl-rendered")
    with gr.Row():
        left = gr.Dropdown(version_choices(state, first) if first else [], label="Diff: from", elem_id="tpl-diff-a")
        right = gr.Dropdown(version_choices(state, first) if first else [], label="to", elem_id="tpl-diff-b")
        diff_btn = gr.Button("Diff", elem_id="tpl-diff")
    diff_out = gr.Markdown("", elem_id="tpl-diff-out")

    def pick(n):
        choices = version_choices(state, n)
        latest = choices[-1] if choices else None
        return (gr.update(choices=choices, value=latest), load_version(state, n, latest),
                gr.update(choices=choices), gr.update(choices=choices))

    name.change(pick, name, [version, editor, left, right])
    load.click(lambda n, v: load_version(state, n, v), [name, version], editor)
    reset.click(lambda n: (shipped_template_body(n), "editor reset to the shipped version 1 (not saved)"), name,
                [editor, message])
    save_btn.click(lambda n, b, t: save(state, n, b, t), [name, editor, note], [message, version, table]).then(
        lambda n: (gr.update(choices=(c := version_choices(state, n))), gr.update(choices=c)), name, [left, right])
    preview_btn.click(lambda b, q: preview(state, b, q), [editor, sample], rendered)
    diff_btn.click(lambda n, a, b: diff(state, n, a, b), [name, left, right], diff_out)
    return table
