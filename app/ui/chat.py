"""The Chat page: a conversation on the left (strategy, template version, question with its live
token count, Ask/Stop, an aria-live status line), the trace of the latest run beside it."""
from __future__ import annotations

import logging

import gradio as gr

from prompts.template import TemplateError, parse_template, shipped_template_names

from ..runner import STRATEGIES
from ..templates import default_version, sync_shipped
from .chat_run import DEFAULT, stop, submit
from .prompt_size import size_note
from .state import AppState
from .trace_view import placeholder

log = logging.getLogger(__name__)

TRACE_HINT = "The trace of the next run appears here: each model and tool call as a card, a timing waterfall, " \
             "and the tokens coloured by how sure the model was."


def _strategy_of(body: str) -> str | None:
    try:
        return parse_template(body).strategy
    except TemplateError:
        return None


def template_choices(state: AppState, strategy: str) -> list[tuple[str, str]]:
    """(label, value): the default version first, then NAME@VERSION of every template written for this strategy."""
    sync_shipped(state.store)
    default = state.template(strategy, None)
    choices = [(f"default · {default.name}@{default.version}", DEFAULT)]
    for name in shipped_template_names():
        versions = state.store.template_versions(name)
        if versions and _strategy_of(versions[-1]["body"]) == strategy:
            promoted = default_version(state.store, name)
            choices += [(f"{name}@{v['version']}" + (" (default)" if v["version"] == promoted else ""),
                         f"{name}@{v['version']}") for v in reversed(versions)]
    return choices


def refresh_templates(state: AppState, strategy: str, current: str):
    """New or promoted template versions appear in the dropdown (after the templates page changed them)."""
    choices = template_choices(state, strategy)
    return gr.update(choices=choices, value=current if current in [v for _, v in choices] else DEFAULT)


def prompt_size(state: AppState, question: str, strategy: str, template: str, turns: list, max_tokens: float) -> str:
    """The live line under the question: its prompt's tokens against the model's context."""
    if not question or not question.strip():
        return ""
    try:
        spec = None if template in (None, "", DEFAULT) else template
        messages = state.template(strategy, spec).render(question, [(t["question"], t["answer"]) for t in turns or []])
    except TemplateError as exc:
        return f'<div class="size-note over">{exc}</div>'
    tokens = state.count_tokens(messages)
    return size_note(tokens, state.context_length, int(max_tokens or 0), len(turns or []), state.prefill)


def _sampling_controls() -> list:
    with gr.Accordion("Sampling", open=False, elem_id="chat-sampling"):
        return [gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)"),
                gr.Slider(0.01, 1, value=1, step=0.01, label="Top-p"),
                gr.Number(0, precision=0, minimum=0, label="Top-k (0 = off)"),
                gr.Slider(0, 1, value=0, step=0.01, label="Min-p"),
                gr.Slider(0.5, 2, value=1, step=0.05, label="Repetition penalty"),
                gr.Number(256, precision=0, minimum=1, label="Max tokens per call", elem_id="chat-max-tokens"),
                gr.Number(None, precision=0, minimum=0, label="Seed (empty = none)"),
                gr.Slider(1, 10, value=1, step=1, label="Self-consistency k (cot, pal)", elem_id="chat-k"),
                gr.Slider(1, 10, value=7, step=1, label="ReAct max steps", elem_id="chat-max-steps"),
                gr.Slider(0, 8, value=0, step=1, label="Draft tokens (speculative decoding; 0 = off)",
                          elem_id="chat-draft"),
                gr.Checkbox(False, label="Deterministic (the same tokens alone or in any batch)",
                            elem_id="chat-deterministic")]


def build(state: AppState) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The Chat tab's components and events (inside a gr.Blocks context); returns (strategy, template)."""
    turns = gr.State([])  # the conversation's (question, answer) turns, carried into every follow-up's prompt
    with gr.Row(elem_id="chat-layout"):
        with gr.Column(scale=5, min_width=360, elem_id="chat-left"):
            with gr.Row():  # above the question, also on a narrow screen
                strategy = gr.Dropdown(list(STRATEGIES), value="cot", label="Strategy", elem_id="chat-strategy",
                                       min_width=120)
                template = gr.Dropdown(template_choices(state, "cot"), value=DEFAULT, label="Template version",
                                       elem_id="chat-template", min_width=160)
            sampling = _sampling_controls()
            chatbot = gr.Chatbot(label="Conversation (follow-ups see the earlier turns)", elem_id="chat-history",
                                 height=340)
            question = gr.Textbox(label="Question · Enter sends, Shift+Enter adds a line", lines=1, max_lines=8,
                                  placeholder="Tom has 3 apples and buys 4 more. How many?", elem_id="chat-question")
            size = gr.HTML("", elem_id="chat-prompt-size")
            with gr.Row():
                ask = gr.Button("Ask", variant="primary", elem_id="chat-ask")
                stop_button = gr.Button("Stop", variant="stop", interactive=False, elem_id="chat-stop")
                clear = gr.Button("Clear conversation", elem_id="chat-clear")
            status = gr.HTML("", elem_id="chat-status")
        with gr.Column(scale=6, min_width=360, elem_id="chat-right"):
            trace = gr.HTML(placeholder(TRACE_HINT), elem_id="chat-trace")
    _wire(state, {"turns": turns, "strategy": strategy, "template": template, "sampling": sampling, "chatbot": chatbot,
                  "question": question, "size": size, "ask": ask, "stop_button": stop_button, "clear": clear,
                  "status": status, "trace": trace})
    return strategy, template


def _wire(state: AppState, c: dict) -> None:
    """The Chat tab's events over its components `c` (by name)."""
    runs: dict[str, list] = {}  # by browser session: what its Stop button stops
    inputs = [c["question"], c["chatbot"], c["turns"], c["strategy"], c["template"], *c["sampling"]]
    outputs = [c["chatbot"], c["trace"], c["status"], c["question"], c["turns"], c["ask"], c["stop_button"]]

    def handler(request: gr.Request, *args):
        yield from submit(state, runs, _session(request), *args)

    c["ask"].click(handler, inputs, outputs)
    c["question"].submit(handler, inputs, outputs)
    def stop_handler(request: gr.Request):
        return stop(runs, _session(request))

    c["stop_button"].click(stop_handler, None, c["status"])
    c["clear"].click(lambda: ([], placeholder(TRACE_HINT), "", [], ""), None,
                     [c["chatbot"], c["trace"], c["status"], c["turns"], c["size"]])
    c["strategy"].change(lambda s: refresh_templates(state, s, DEFAULT), c["strategy"], c["template"])
    size_inputs = [c["question"], c["strategy"], c["template"], c["turns"], c["sampling"][5]]
    for event in (c["question"].change, c["template"].change, c["turns"].change, c["sampling"][5].change):
        event(lambda *a: prompt_size(state, *a), size_inputs, c["size"], trigger_mode="always_last",
              show_progress="hidden")


def _session(request: gr.Request | None) -> str:
    return (getattr(request, "session_hash", None) or "") if request is not None else ""
