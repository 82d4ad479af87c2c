"""A Chat page run from click to stored trace: the question runs in a thread while the page streams
its answer, trace and status; Stop ends it; the outcome colours the status line and the reply.

Each question carries the conversation: the earlier (question, answer) turns go into its prompt.
"""
from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import asdict

import gradio as gr

from ..errors import user_errors
from ..runner import StrategyOptions
from ..tools import wiki_problem
from .live_run import LiveRun
from .outcome import OUTCOMES, Outcome, outcome_of, plain_status, status_line
from .prompt_size import prefill_progress
from .state import AppState, sampling_from
from .trace_view import render_live, render_run

log = logging.getLogger(__name__)

DEFAULT = "default"  # the template dropdown's value for "the strategy's default version"
POLL_S = 0.25  # how often the page redraws a running answer
RUNNING = (gr.update(interactive=False), gr.update(interactive=True))  # (Ask, Stop) while a run goes on
IDLE = (gr.update(interactive=True), gr.update(interactive=False))


def _run_in_thread(state: AppState, args: tuple, history: list, outcome: dict, live: LiveRun) -> threading.Thread:
    """The run goes on in its own thread while the page shows it; Stop ends it at the next token."""
    def work():
        try:
            outcome["run_id"], _ = state.ask(*args, live=live, history=history)
        except user_errors() as exc:
            outcome["error"] = str(exc)
        except Exception as exc:  # a bug: its run is stored as an error; the server log has the traceback
            log.exception("chat run failed")
            outcome["error"] = f"{type(exc).__name__}: {exc} (a bug; the server log has the traceback)"
    thread = threading.Thread(target=work, name="chat-run", daemon=True)
    thread.start()
    return thread


def _prefill(state: AppState, call, now: float) -> str:
    """The prompt-reading bar of a call that has no token yet ('' once tokens come)."""
    if call.seconds is not None or call.tokens or not call.prompt_tokens:
        return ""
    return prefill_progress(call.prompt_tokens, now - call.started, state.prefill)


def live_trace(live: LiveRun, strategy: str, state: AppState | None = None) -> str:
    """The trace so far: recorded steps, then the calls still generating (or still reading their prompt)."""
    steps = [{**asdict(step), "idx": i} for i, step in enumerate(live.steps())]
    now = time.perf_counter()
    pending = [{"text": c.text, "tokens": c.tokens, "running": c.seconds is None,
                "seconds": c.seconds if c.seconds is not None else now - c.started,
                "prefill": _prefill(state, c, now) if state else ""} for c in live.pending_calls()]
    return render_live(strategy, steps, pending)


def _live_status(state: AppState, strategy: str, live: LiveRun) -> str:
    elapsed = time.perf_counter() - live.started
    if live.stopped:
        return status_line(OUTCOMES["stopped"], f"stopping {strategy}… {elapsed:.1f} s")
    tokens = sum(c.tokens for c in live.calls.values())
    calls = list(live.calls.values())
    reading = _prefill(state, calls[-1], time.perf_counter()) if calls else ""
    return status_line(OUTCOMES["running"], f"running {strategy}… {elapsed:.1f} s · model calls: {len(calls)} · "
                                            f"{tokens} tokens generated{reading}")


def bubble(outcome: Outcome, text: str, meta: str = "") -> str:
    """A reply in the conversation, coloured and marked by how its run ended."""
    return (f'<div class="reply outcome-{outcome.key}"><div class="reply-head"><span class="mark" aria-hidden="true">'
            f'{outcome.mark}</span> {outcome.word}</div><div class="reply-text">{html.escape(text)}</div>'
            f'<div class="reply-meta">{html.escape(meta)}</div></div>')


def reply_text(run: dict, partial: str) -> str:
    """What the reply says: the answer, a stopped run's partial text, or why there is none."""
    if run.get("answer") is not None:
        return str(run["answer"])
    if run["status"] == "stopped":
        return (partial.strip() or "(nothing generated yet)") + " …"
    if run["status"] == "error":
        return run.get("error") or "error"
    return "(the model gave no answer)"


def final_status(run: dict, seconds: float) -> str:
    """The status line once a run has ended: its outcome, never "done" for a run that failed."""
    outcome = outcome_of(run)
    tokens = (run.get("prompt_tokens") or 0) + (run.get("completion_tokens") or 0)
    facts = f" · {run['template_name']}@{run['template_version']} · {tokens} tokens"
    text = {"stopped": f"stopped after {seconds:.1f} s; the steps so far and the partial answer are stored",
            "error": f"error after {seconds:.1f} s: {html.escape(run.get('error') or '')}",
            "no_answer": f"finished in {seconds:.1f} s without an answer"}.get(outcome.key, f"answered in {seconds:.1f} s")
    return status_line(outcome, text + facts)


def _refusal(state: AppState, runs: dict, session: str, question: str, strategy: str) -> str | None:
    """Why a question is not run, or None."""
    if not question or not question.strip():
        return plain_status("<b>Please type a question first.</b> Nothing was run.")
    if runs.get(session):
        return plain_status("A run is still going: wait for it or press Stop.")
    problem = wiki_problem(state.settings) if strategy == "react" else None
    return status_line(OUTCOMES["error"], f"Not run: {html.escape(problem)}") if problem else None


def _finished(state: AppState, question: str, history: list, turns: list, outcome: dict, live: LiveRun) -> tuple:
    """The conversation, trace, status and turns once the run has ended."""
    seconds = time.perf_counter() - live.started
    if "run_id" not in outcome:
        error = outcome.get("error", "the run failed; the server log has the details")
        history.append({"role": "assistant", "content": bubble(OUTCOMES["error"], error)})
        return history, gr.update(), status_line(OUTCOMES["error"], html.escape(error)), gr.update(), turns, *IDLE
    run = state.store.get_run(outcome["run_id"])
    text = reply_text(run, live.latest_text())
    meta = f"{run['strategy']} · {run['template_name']}@{run['template_version']} · run {run['id']}"
    history.append({"role": "assistant", "content": bubble(outcome_of(run), text, meta)})
    turns = [*turns, {"question": question, "answer": text if run["status"] != "error" else "(error)"}]
    return history, render_run(run), final_status(run, seconds), gr.update(), turns, *IDLE


def submit(state: AppState, runs: dict, session: str, question: str, history: list, turns: list, strategy: str,
           template: str, temperature: float, top_p: float, top_k: float, min_p: float, repetition_penalty: float,
           max_tokens: float, seed: float | None, k: float, max_steps: float, draft_tokens: float = 0,
           deterministic: bool = False):
    """Generator: the answer streams into the conversation and the trace unfolds; then the stored run.

    Yields (conversation, trace, status, question box, turns, Ask, Stop).
    """
    history, turns = list(history or []), list(turns or [])
    refusal = _refusal(state, runs, session, question, strategy)
    if refusal:
        yield history, gr.update(), refusal, gr.update(), turns, gr.update(), gr.update()
        return
    sampling = sampling_from({"temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
                              "repetition_penalty": repetition_penalty, "max_tokens": max_tokens, "seed": seed,
                              "draft_tokens": draft_tokens or None, "deterministic": deterministic or None})
    options = StrategyOptions(self_consistency=int(k or 1), max_steps=int(max_steps or 7))
    spec = None if template in (None, "", DEFAULT) else template
    history.append({"role": "user", "content": question})
    live, outcome, cleared = LiveRun(state.count_tokens), {}, ""
    runs.setdefault(session, []).append(live)
    try:
        earlier = [(turn["question"], turn["answer"]) for turn in turns]
        thread = _run_in_thread(state, (question.strip(), strategy, spec, sampling, options), earlier, outcome, live)
        while thread.is_alive():
            streaming = {"role": "assistant", "content": bubble(OUTCOMES["running"], (live.latest_text() or "…") + " ▌")}
            yield ([*history, streaming], live_trace(live, strategy, state), _live_status(state, strategy, live), cleared,
                   turns, *RUNNING)
            cleared = gr.update()  # the question box is cleared once; what is typed during the run stays
            thread.join(POLL_S)
    finally:
        runs[session].remove(live)
    yield _finished(state, question.strip(), history, turns, outcome, live)


def stop(runs: dict, session: str):
    """Stop this page's runs: each ends at its next token and is stored `stopped` with what it had done."""
    live_runs = list(runs.get(session) or [])
    for live in live_runs:
        live.stop()
    # the running page shows "stopping" itself; writing it here could land after its final "stopped"
    return gr.update() if live_runs else plain_status("Nothing is running.")
