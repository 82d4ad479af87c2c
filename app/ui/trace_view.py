"""A run's trace as HTML cards: a header coloured by outcome, the timing waterfall, then one card
per step labelled by what it is (Thought, Action, Observation, Program, Sandbox output, Vote,
Reasoning…), prompt and output told apart, errors in red, every card collapsible.

Everything a model, a tool or a person wrote is escaped: a trace is untrusted text.
"""
from __future__ import annotations

import ast
import html
import json
import re

from .outcome import badge, outcome_of
from .tokens import coloured_output, legend, low_confidence, token_strip
from .waterfall import waterfall

ACTION = re.compile(r"Action\s*\d*\s*:\s*((?:Search|Lookup|Finish)\s*\[.*?\])", re.IGNORECASE | re.DOTALL)
esc = html.escape


def step_label(step: dict, strategy: str) -> tuple[str, str]:
    """(label, css kind) of a step: what it is in its strategy."""
    kind, name, meta = step["kind"], step.get("name") or "", step.get("meta") or {}
    if kind == "llm":
        if meta.get("fallback"):
            return "Chain of thought (fallback)", "thought"
        return {"pal": ("Program (fix)" if name == "fix program" else "Program", "program"),
                "react": ("Thought", "thought"), "cot": ("Chain of thought", "thought")}.get(strategy, ("Answer", "answer"))
    if kind == "tool":
        return ("Sandbox output", "sandbox") if name == "sandbox" else ("Action", "action")
    return {"vote": ("Vote", "vote"), "parse_error": ("Parse error", "error")}.get(kind, (kind, "other"))


def _timing(step: dict) -> str:
    seconds = (step.get("duration_ms") or 0) / 1000
    if step["kind"] != "llm":
        return f"{seconds:.2f} s" if seconds else ""
    rate = f" · {step['completion_tokens'] / seconds:.0f} tok/s" if seconds > 0 and step["completion_tokens"] else ""
    return f"{seconds:.2f} s · {step['prompt_tokens']} prompt + {step['completion_tokens']} completion tokens{rate}"


def _text(text: str, css: str = "") -> str:
    return f'<pre class="text {css}">{esc(text or "")}</pre>'


def _block(label: str, inner: str, css: str, open_: bool = True) -> str:
    """A labelled, collapsible part of a card (prompt, output, reasoning, observation)."""
    return f'<details class="io {css}"{" open" if open_ else ""}><summary>{esc(label)}</summary>{inner}</details>'


def _output(step: dict, css: str = "") -> str:
    """The output text, coloured by token probability when the step has it."""
    logprobs = (step.get("meta") or {}).get("logprobs")
    if not logprobs:
        return _text(step["output"], css)
    coloured = coloured_output(step["output"] or "", logprobs)
    if coloured is not None:
        return f'<pre class="text tokens {css}">{coloured}</pre>'
    strip = _block("Tokens as generated", f'<pre class="text tokens">{token_strip(logprobs)}</pre>', "tokens", False)
    return _text(step["output"], css) + strip


def _llm_body(step: dict, strategy: str) -> str:
    meta = step.get("meta") or {}
    parts = [_block(f"Prompt · {step['prompt_tokens']} tokens", _text(step["input"]), "prompt", open_=False)]
    if meta.get("reasoning"):
        parts.append(_block("Reasoning (the model's thinking)", _text(meta["reasoning"]), "reasoning", open_=False))
    unsure = low_confidence(meta.get("logprobs") or [])
    label = f"Output · {step['completion_tokens']} tokens" + (f" · {unsure} below 50% probability" if unsure else "")
    parts.append(_block(label, _output(step, "code" if strategy == "pal" else ""), "output"))
    action = ACTION.search(step["output"] or "") if strategy == "react" else None
    if action:
        parts.append(f'<div class="chip kind-action">Action: {esc(action.group(1))}</div>')
    return "".join(parts)


def _sandbox_body(step: dict) -> str:
    try:
        result = json.loads(step["output"] or "{}")
    except json.JSONDecodeError:
        result = {"value": step["output"]}
    parts = [_block("Program run", _text(step["input"], "code"), "prompt", open_=False),
             f'<div class="returned">Returned: <code>{esc(repr(result.get("value")))}</code></div>']
    if result.get("stdout"):
        parts.append(_block("Printed", _text(result["stdout"]), "output"))
    return "".join(parts)


def _action_body(step: dict) -> str:
    repeated = " (repeated action, not run again)" if (step.get("meta") or {}).get("repeated") else ""
    action = f'<div class="chip kind-action">{esc((step.get("name") or "").capitalize())}[{esc(step["input"])}]{repeated}</div>'
    return action + _block("Observation", _text(step["output"]), "output observation")


def _vote_body(step: dict) -> str:
    meta = step.get("meta") or {}
    counts, mass = meta.get("counts") or {}, meta.get("mass") or {}
    top = max(counts.values(), default=0)
    tied = [answer for answer, n in counts.items() if n == top]
    rows = "".join(f'<tr class="{"winner" if a == step["output"] else ""}"><td>{esc(str(a))}</td><td>{n}</td>'
                   f'<td>{esc(str(mass.get(a, "")))}</td></tr>' for a, n in counts.items())
    table = f'<table class="votes"><tr><th>answer</th><th>votes</th><th>summed log-prob</th></tr>{rows}</table>'
    note = (f'<div class="tie">Tie: {", ".join(esc(str(a)) for a in tied)} have {top} votes each; the answer whose '
            f'paths have the higher summed log-probability wins.</div>') if len(tied) > 1 else ""
    winner = step["output"] if counts else "none: no sample gave an answer"
    return f'<div>Samples answered: <code>{esc(_answers(step["input"]))}</code></div>{table if counts else ""}{note}' \
           f'<div class="winner-line">Winner: <b>{esc(winner)}</b></div>'


def _answers(text: str) -> str:
    try:
        return ", ".join("—" if a is None else str(a) for a in ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return text


def _body(step: dict, strategy: str) -> str:
    kind = step["kind"]
    if kind == "llm":
        return _llm_body(step, strategy)
    if kind == "tool":
        return _sandbox_body(step) if step.get("name") == "sandbox" else _action_body(step)
    if kind == "vote":
        return _vote_body(step)
    return _block("Could not parse", _text(step["input"]), "output")


def step_card(step: dict, strategy: str) -> str:
    """One step as a collapsible card; a step with an error has a red edge and its error in red."""
    label, css = step_label(step, strategy)
    error = step.get("error")
    summary = (f'<summary><span class="step-n">{step["idx"] + 1}</span><span class="step-kind kind-{css}">{esc(label)}'
               f'</span><span class="step-name">{esc(step.get("name") or "")}</span>'
               f'<span class="step-meta">{esc(_timing(step))}</span></summary>')
    failure = f'<div class="step-error"><b>Error</b>{_text(error)}</div>' if error else ""
    if (step.get("meta") or {}).get("finish_reason") == "stopped":
        failure += '<div class="chip kind-pending">stopped here by the user</div>'
    classes = f"step kind-{css}" + (" has-error" if error else "")
    return f'<details class="{classes}" open>{summary}<div class="step-body">{_body(step, strategy)}{failure}</div></details>'


def _labels(steps: list[dict], strategy: str) -> list[tuple[str, str]]:
    return [step_label(step, strategy) for step in steps]


def run_header(run: dict) -> str:
    """Outcome, strategy, template version, model, time and tokens; the question; the turns it follows."""
    seconds = (run.get("duration_ms") or 0) / 1000
    tokens = (run.get("prompt_tokens") or 0) + (run.get("completion_tokens") or 0)
    facts = (f"run {esc(run['id'])} · <b>{esc(run['strategy'])}</b> · template <b>{esc(run['template_name'])}@"
             f"{run['template_version']}</b> · {esc(run.get('model_id') or '?')} ({esc(run.get('backend') or '?')}) · "
             f"status <b>{esc(run['status'])}</b> · {seconds:.1f} s · {tokens} tokens")
    turns = (run.get("counters") or {}).get("earlier_turns")
    follows = f'<div class="trace-turns">follows {turns} earlier turn{"s" if turns != 1 else ""} of the conversation ' \
              f'(in the prompt)</div>' if turns else ""
    return (f'<div class="trace-head">{badge(outcome_of(run))} <span class="facts">{facts}</span>'
            f'<div class="trace-q">Q: {esc(run["question"])}</div>{follows}</div>')


def _answer(run: dict) -> str:
    answer = run.get("answer")
    shown = esc(str(answer)) if answer is not None else "(no answer)"
    expected = ""
    if run.get("expected") is not None:
        expected = f' · expected {esc(str(run["expected"]))}: {"correct" if run.get("correct") else "wrong"}'
    return f'<div class="trace-answer outcome-{outcome_of(run).key}">Answer: <b>{shown}</b>{expected}</div>'


def render_run(run: dict | None) -> str:
    """The whole trace of a stored run."""
    if run is None:
        return '<div class="trace empty">No such run.</div>'
    steps, strategy = run.get("steps") or [], run["strategy"]
    has_logprobs = any((s.get("meta") or {}).get("logprobs") for s in steps)
    return (f'<div class="trace">{run_header(run)}{waterfall(steps, _labels(steps, strategy))}'
            f'{legend() if has_logprobs else ""}<div class="steps">{"".join(step_card(s, strategy) for s in steps)}</div>'
            f'{_answer(run)}{_run_error(run)}</div>')


def _run_error(run: dict) -> str:
    """Why the run ended without an answer: an error in red; a Stop is not an error."""
    if not run.get("error"):
        return ""
    if run["status"] == "stopped":
        return f'<div class="trace-note outcome-stopped">{badge(outcome_of(run))} {esc(run["error"])}: the steps done ' \
               f'and the cut-off text are kept.</div>'
    return f'<div class="step-error"><b>Run error</b>{_text(run["error"])}</div>'


def pending_card(number: int, call: dict, strategy: str) -> str:
    """A model call still generating (or just ended, not yet a step): its text so far, or its prefill progress."""
    if call["running"] and not call["tokens"] and call.get("prefill"):
        body = call["prefill"]
    else:
        body = _text(call["text"], "code" if strategy == "pal" else "")
    state = "generating…" if call["running"] else "finished"
    meta = f"{call['tokens']} tokens · {call['seconds']:.1f} s"
    return (f'<details class="step kind-pending" open><summary><span class="step-n">{number}</span>'
            f'<span class="step-kind kind-pending">Model call</span><span class="step-name">{state}</span>'
            f'<span class="step-meta">{meta}</span></summary><div class="step-body">{body}</div></details>')


def render_live(strategy: str, steps: list[dict], pending: list[dict]) -> str:
    """A run still going: the steps recorded so far, then the model calls still generating.

    A pending call is {"text", "tokens", "seconds", "running", "prefill"}. Nothing here names the
    question, so the page's finished trace ("Q: …") is told apart from a live one.
    """
    cards = [step_card(step, strategy) for step in steps]
    cards += [pending_card(i, call, strategy) for i, call in enumerate(pending, start=len(steps) + 1)]
    return (f'<div class="trace live"><div class="trace-head">{badge(outcome_of({"status": "running"}))} '
            f'<span class="facts">live trace · {esc(strategy)} · steps appear as they finish</span></div>'
            f'<div class="steps">{"".join(cards)}</div></div>')


def placeholder(text: str) -> str:
    return f'<div class="trace empty">{esc(text)}</div>'
