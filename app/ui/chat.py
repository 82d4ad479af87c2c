"""The Chat page: ask a question with a strategy and sampling settings; see the answer and its trace."""
from __future__ import annotations

import logging
import threading
import time

import gradio as gr

from prompts.template import TemplateError

from ..runner import STRATEGIES, StrategyOptions
from .render import answer_text, render_run
from .state import AppState, sampling_from

log = logging.getLogger(__name__)

LATEST = "latest"
POLL_S = 0.5


def template_choices(state: AppState, strategy: str) -> list[str]:
    """'latest' plus NAME@VERSION for every stored template written for this strategy."""
    from prompts.template import parse_template, shipped_template_names

    from ..templates import sync_shipped

    sync_shipped(state.store)
    choices = [LATEST]
    for name in shipped_template_names():
        versions = state.store.template_versions(name)
        if versions and _strategy_of(parse_template, versions[-1]["body"]) == strategy:
            choices += [f"{name}@{v['version']}" for v in reversed(versions)]
    return choices


def _strategy_of(parse, body: str) -> str | None:
    try:
        return parse(body).strategy
    except TemplateError:
        return None


def _run_in_thread(state: AppState, args: tuple, outcome: dict) -> threading.Thread:
    """The run goes on in its own thread, so Stop ends the page's wait while the run still gets stored."""
    def work():
        try:
            outcome["run_id"], _ = state.ask(*args)
        except (TemplateError, ValueError, FileNotFoundError) as exc:
            outcome["error"] = str(exc)
    thread = threading.Thread(target=work, name="chat-run", daemon=True)
    thread.start()
    return thread


def submit(state: AppState, question: str, history: list, strategy: str, template: str, temperature: float,
           top_p: float, top_k: float, min_p: float, repetition_penalty: float, max_tokens: float, seed: float | None,
           k: float, max_steps: float):
    """Generator: a running state with elapsed time while the strategy works, then answer and trace."""
    history = list(history or [])
    if not question or not question.strip():
        yield history, gr.update(), "**Please type a question first.** Nothing was run.", question
        return
    sampling = sampling_from({"temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
                              "repetition_penalty": repetition_penalty, "max_tokens": max_tokens, "seed": seed})
    options = StrategyOptions(self_consistency=int(k or 1), max_steps=int(max_steps or 7))
    spec = None if template in (None, "", LATEST) else template
    history.append({"role": "user", "content": question})
    outcome: dict = {}
    started = time.perf_counter()
    thread = _run_in_thread(state, (question.strip(), strategy, spec, sampling, options), outcome)
    while thread.is_alive():
        yield history, gr.update(), f"⏳ running {strategy}… {time.perf_counter() - started:.1f} s", ""
        thread.join(POLL_S)
    if "error" in outcome:
        history.append({"role": "assistant", "content": f"Error: {outcome['error']}"})
        yield history, gr.update(), f"**Error:** {outcome['error']}", ""
        return
    run = state.store.get_run(outcome["run_id"])
    history.append({"role": "assistant", "content": answer_text(run)})
    yield history, render_run(run), f"✅ done in {time.perf_counter() - started:.1f} s", ""


def build(state: AppState) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The Chat tab's components and events (inside a gr.Blocks context); returns (strategy, template)."""
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Conversation", elem_id="chat-history", height=320)
            question = gr.Textbox(label="Question", placeholder="Tom has 3 apples and buys 4 more. How many?",
                                  lines=2, elem_id="chat-question")
            with gr.Row():
                ask = gr.Button("Ask", variant="primary", elem_id="chat-ask")
                stop = gr.Button("Stop", variant="stop", elem_id="chat-stop")
                clear = gr.Button("Clear conversation", elem_id="chat-clear")
            status = gr.Markdown("", elem_id="chat-status")
        with gr.Column(scale=2):
            strategy = gr.Dropdown(list(STRATEGIES), value="cot", label="Strategy", elem_id="chat-strategy")
            template = gr.Dropdown(template_choices(state, "cot"), value=LATEST, label="Template version",
                                   elem_id="chat-template")
            with gr.Accordion("Sampling", open=False, elem_id="chat-sampling"):
                temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)")
                top_p = gr.Slider(0.01, 1, value=1, step=0.01, label="Top-p")
                top_k = gr.Number(0, precision=0, minimum=0, label="Top-k (0 = off)")
                min_p = gr.Slider(0, 1, value=0, step=0.01, label="Min-p")
                penalty = gr.Slider(0.5, 2, value=1, step=0.05, label="Repetition penalty")
                max_tokens = gr.Number(256, precision=0, minimum=1, label="Max tokens per call",
                                       elem_id="chat-max-tokens")
                seed = gr.Number(None, precision=0, minimum=0, label="Seed (empty = none)")
                k = gr.Slider(1, 10, value=1, step=1, label="Self-consistency k (cot, pal)")
                max_steps = gr.Slider(1, 10, value=7, step=1, label="ReAct max steps", elem_id="chat-max-steps")
    trace = gr.Markdown("", elem_id="chat-trace", label="Trace")

    strategy.change(lambda s: gr.update(choices=template_choices(state, s), value=LATEST), strategy, template)
    inputs = [question, chatbot, strategy, template, temperature, top_p, top_k, min_p, penalty, max_tokens, seed, k,
              max_steps]
    outputs = [chatbot, trace, status, question]

    def handler(*args):
        yield from submit(state, *args)

    events = [ask.click(handler, inputs, outputs), question.submit(handler, inputs, outputs)]
    stop.click(lambda: "⏹ stopped (a run already started is still stored when it ends)", None, status, cancels=events)
    clear.click(lambda: ([], "", ""), None, [chatbot, trace, status])
    return strategy, template


def refresh_templates(state: AppState, strategy: str, current: str):
    """New template versions appear in the dropdown (after a save on the templates page)."""
    choices = template_choices(state, strategy)
    return gr.update(choices=choices, value=current if current in choices else LATEST)
