"""The Chat page: ask a question with a strategy and sampling settings; the answer streams, the trace unfolds."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict

import gradio as gr

from prompts.template import TemplateError

from ..errors import user_errors
from ..runner import STRATEGIES, StrategyOptions
from .live_run import LiveRun
from .render import answer_text, render_live, render_run
from .state import AppState, sampling_from

log = logging.getLogger(__name__)

LATEST = "latest"
POLL_S = 0.25  # how often the page redraws a running answer


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


def _run_in_thread(state: AppState, args: tuple, outcome: dict, live: LiveRun) -> threading.Thread:
    """The run goes on in its own thread while the page shows it; Stop ends it at the next token."""
    def work():
        try:
            outcome["run_id"], _ = state.ask(*args, live=live)
        except user_errors() as exc:
            outcome["error"] = str(exc)
        except Exception as exc:  # a bug: its run is stored as an error; the server log gets the traceback
            log.exception("chat run failed")
            outcome["error"] = f"{type(exc).__name__}: {exc} (a bug; the server log has the traceback)"
    thread = threading.Thread(target=work, name="chat-run", daemon=True)
    thread.start()
    return thread


def live_trace(live: LiveRun, strategy: str) -> str:
    """The trace so far: recorded steps, then the calls still generating."""
    steps = [{**asdict(step), "idx": i} for i, step in enumerate(live.steps())]
    now = time.perf_counter()
    pending = [{"text": c.text, "tokens": c.tokens, "running": c.seconds is None,
                "seconds": c.seconds if c.seconds is not None else now - c.started} for c in live.pending_calls()]
    return render_live(strategy, steps, pending)


def _live_status(strategy: str, live: LiveRun) -> str:
    elapsed = time.perf_counter() - live.started
    if live.stopped:
        return f"⏹ stopping {strategy}… {elapsed:.1f} s"
    tokens = sum(c.tokens for c in live.calls.values())
    return f"⏳ running {strategy}… {elapsed:.1f} s · model calls: {len(live.calls)} · {tokens} tokens"


def _streaming_reply(live: LiveRun) -> dict:
    return {"role": "assistant", "content": (live.latest_text() or "…") + " ▌"}


def _final_status(run: dict, live: LiveRun) -> str:
    elapsed = time.perf_counter() - live.started
    if live.stopped and run["status"] == "error":
        return f"⏹ stopped after {elapsed:.1f} s; the run is stored with what it had done"
    return f"✅ done in {elapsed:.1f} s"


def submit(state: AppState, runs: dict, session: str, question: str, history: list, strategy: str, template: str,
           temperature: float, top_p: float, top_k: float, min_p: float, repetition_penalty: float, max_tokens: float,
           seed: float | None, k: float, max_steps: float):
    """Generator: the answer streams into the conversation and the trace unfolds; then the stored run."""
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
    live, cleared = LiveRun(), ""
    runs.setdefault(session, []).append(live)
    try:
        thread = _run_in_thread(state, (question.strip(), strategy, spec, sampling, options), outcome, live)
        while thread.is_alive():
            yield [*history, _streaming_reply(live)], live_trace(live, strategy), _live_status(strategy, live), cleared
            cleared = gr.update()  # the question box is cleared once; what is typed during the run stays
            thread.join(POLL_S)
    finally:
        runs[session].remove(live)
    if "run_id" not in outcome:
        error = outcome.get("error", "the run failed; the server log has the details")
        history.append({"role": "assistant", "content": f"Error: {error}"})
        yield history, gr.update(), f"**Error:** {error}", cleared
        return
    run = state.store.get_run(outcome["run_id"])
    history.append({"role": "assistant", "content": answer_text(run)})
    yield history, render_run(run), _final_status(run, live), cleared


def stop(runs: dict, session: str):
    """Stop this page's runs: each ends at its next token and is stored with what it had done."""
    live_runs = list(runs.get(session) or [])
    for live in live_runs:
        live.stop()
    # the running page shows "stopping" itself; writing it here could land after its final "stopped"
    return gr.update() if live_runs else "Nothing is running."


def build(state: AppState) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The Chat tab's components and events (inside a gr.Blocks context); returns (strategy, template)."""
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Conversation", elem_id="chat-history", height=320)
            question = gr.Textbox(label="Question", placeholder="Tom has 3 apples and buys 4 more. How many?",
                                  lines=2, elem_id="chat-question")
            with gr.Row():
                ask = gr.Button("Ask", variant="primary", elem_id="chat-ask")
                stop_button = gr.Button("Stop", variant="stop", elem_id="chat-stop")
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

    runs: dict[str, list[LiveRun]] = {}  # by browser session: what its Stop button stops

    def handler(request: gr.Request, *args):
        yield from submit(state, runs, _session(request), *args)

    def stop_handler(request: gr.Request):
        return stop(runs, _session(request))

    ask.click(handler, inputs, outputs)
    question.submit(handler, inputs, outputs)
    stop_button.click(stop_handler, None, status)
    clear.click(lambda: ([], "", ""), None, [chatbot, trace, status])
    return strategy, template


def _session(request: gr.Request | None) -> str:
    return (getattr(request, "session_hash", None) or "") if request is not None else ""


def refresh_templates(state: AppState, strategy: str, current: str):
    """New template versions appear in the dropdown (after a save on the templates page)."""
    choices = template_choices(state, strategy)
    return gr.update(choices=choices, value=current if current in choices else LATEST)
