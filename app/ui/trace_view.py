"""A run's trace as HTML cards: a header coloured by outcome, the timing waterfall, then one card
per step labelled by what it is (Thought, Action, Observation, Program, Sandbox output, Vote,
Reasoning…), prompt and output told apart, errors in red, every card collapsible. A fork's header
says how it was made and its cards which steps came from the parent; a trace that can be forked
offers Fork here on each model and tool step and Branch here on each token (page.js); a
comparison greys the steps that match and marks the first divergence.

Everything a model, a tool or a person wrote is escaped: a trace is untrusted text.
"""
from __future__ import annotations

import ast
import html
import json
import re
from dataclasses import dataclass

from ..lineage import lineage_line
from .outcome import badge, outcome_of
from .tokens import coloured_output, legend, low_confidence, token_strip
from .waterfall import tokens_per_second, waterfall

ACTION = re.compile(r"Action\s*\d*\s*:\s*((?:Search|Lookup|Finish)\s*\[.*?\])", re.IGNORECASE | re.DOTALL)
esc = html.escape


@dataclass(frozen=True)
class Marks:
    """What a trace shows beyond the run itself: fork controls, and a comparison's matches and divergence."""

    forkable: bool = False
    same: frozenset[int] = frozenset()  # steps equal in the other run (greyed)
    diverges: int | None = None  # the step where the runs first part
    token: int | None = None  # the token of that step's output where they part (when tokens were compared)


def diff_marks(difference: dict) -> Marks:
    """The marks of one side of a diff (app.run_diff.diff_runs)."""
    first = difference["first_divergence"] or {}
    return Marks(same=frozenset(r["step"] for r in difference["steps"] if r["equal"]), diverges=first.get("step"),
                 token=first.get("token") if first.get("unit") == "token" else None)


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
    rate = f" · {tokens_per_second(step['completion_tokens'], seconds)}" if seconds > 0 and step["completion_tokens"] else ""
    cached = (step.get("meta") or {}).get("cached_prompt_tokens")
    reused = f" ({cached} from cache)" if cached else ""
    return f"{seconds:.2f} s · {step['prompt_tokens']} prompt{reused} + {step['completion_tokens']} completion tokens{rate}"


def _text(text: str, css: str = "") -> str:
    return f'<pre class="text {css}">{esc(text or "")}</pre>'


def _block(label: str, inner: str, css: str, open_: bool = True) -> str:
    """A labelled, collapsible part of a card (prompt, output, reasoning, observation)."""
    return f'<details class="io {css}"{" open" if open_ else ""}><summary>{esc(label)}</summary>{inner}</details>'


def _output(step: dict, css: str = "", marks: Marks = Marks()) -> str:
    """The output text, coloured by token probability when the step has it."""
    logprobs = (step.get("meta") or {}).get("logprobs")
    if not logprobs:
        return _text(step["output"], css)
    mark = marks.token if step["idx"] == marks.diverges else None
    coloured = coloured_output(step["output"] or "", logprobs, branchable=marks.forkable, mark=mark)
    if coloured is not None:
        return f'<pre class="text tokens {css}">{coloured}</pre>'
    strip = _block("Tokens as generated", f'<pre class="text tokens">{token_strip(logprobs, mark)}</pre>', "tokens", False)
    return _text(step["output"], css) + strip


def _llm_body(step: dict, strategy: str, marks: Marks) -> str:
    meta = step.get("meta") or {}
    parts = [_block(f"Prompt · {step['prompt_tokens']} tokens", _text(step["input"]), "prompt", open_=False)]
    if meta.get("reasoning"):
        parts.append(_block("Reasoning (the model's thinking)", _text(meta["reasoning"]), "reasoning", open_=False))
    unsure = low_confidence(meta.get("logprobs") or [])
    label = f"Output · {step['completion_tokens']} tokens" + (f" · {unsure} below 50% probability" if unsure else "")
    parts.append(_block(label, _output(step, "code" if strategy == "pal" else "", marks), "output"))
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
    votes = "1 vote" if top == 1 else f"{top} votes"
    note = (f'<div class="tie">Tie: {", ".join(esc(str(a)) for a in tied)} have {votes} each; the answer whose '
            f'paths have the higher summed log-probability wins.</div>') if len(tied) > 1 else ""
    winner = step["output"] if counts else "none: no sample gave an answer"
    return f'<div>Samples answered: <code>{esc(_answers(step["input"]))}</code></div>{table if counts else ""}{note}' \
           f'<div class="winner-line">Winner: <b>{esc(winner)}</b></div>'


def _answers(text: str) -> str:
    try:
        return ", ".join("—" if a is None else str(a) for a in ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return text


def _body(step: dict, strategy: str, marks: Marks) -> str:
    kind = step["kind"]
    if kind == "llm":
        return _llm_body(step, strategy, marks)
    if kind == "tool":
        return _sandbox_body(step) if step.get("name") == "sandbox" else _action_body(step)
    if kind == "vote":
        return _vote_body(step)
    return _block("Could not parse", _text(step["input"]), "output")


def step_card(step: dict, strategy: str, marks: Marks = Marks(), forked_at: int | None = None) -> str:
    """One step as a collapsible card; a step with an error has a red edge and its error in red."""
    label, css = step_label(step, strategy)
    error = step.get("error")
    summary = (f'<summary><span class="step-n">{step["idx"] + 1}</span><span class="step-kind kind-{css}">{esc(label)}'
               f'</span><span class="step-name">{esc(step.get("name") or "")}</span>{_chips(step, marks, forked_at)}'
               f'<span class="step-meta">{esc(_timing(step))}</span></summary>')
    failure = f'<div class="step-error"><b>Error</b>{_text(error)}</div>' if error else ""
    if (step.get("meta") or {}).get("finish_reason") == "stopped":
        failure += '<div class="chip kind-pending">stopped here by the user</div>'
    classes = f"step kind-{css}" + (" has-error" if error else "") + (" same" if step["idx"] in marks.same else "") + \
        (" diverges" if step["idx"] == marks.diverges else "")
    body = _body(step, strategy, marks) + failure + (_fork_control(step) if marks.forkable else "")
    return f'<details class="{classes}" data-step="{step["idx"]}" open>{summary}<div class="step-body">{body}</div></details>'


def _chips(step: dict, marks: Marks, forked_at: int | None) -> str:
    """Where a step came from (the parent run, a person's edit) and whether it is where two runs part."""
    chips = []
    if forked_at is not None and step["idx"] < forked_at:
        chips.append('<span class="tag from-parent">from the parent run</span>')
    meta = step.get("meta") or {}
    if meta.get("branched_at_token") is not None:
        chips.append(f'<span class="tag edited">branched at token {int(meta["branched_at_token"])}</span>')
    elif meta.get("edited"):
        chips.append(f'<span class="tag edited">{"edited, then continued" if meta.get("continued") else "edited"}</span>')
    if step["idx"] == marks.diverges:
        token = "" if marks.token is None else f" at token {marks.token}"
        chips.append(f'<span class="tag diverges">first divergence{token}</span>')
    return "".join(chips)


def forkable(step: dict) -> bool:
    """A model call's or a tool call's output can be replaced (a repeated action was never a tool call)."""
    return step["kind"] == "llm" or (step["kind"] == "tool" and not (step.get("meta") or {}).get("repeated"))


def _fork_control(step: dict) -> str:
    """Fork here: page.js turns the card's output into an editor filled from the hidden source text."""
    if not forkable(step):
        return ""
    return (f'<div class="fork-row"><button type="button" class="fork-btn" data-step="{step["idx"]}">Fork here</button>'
            f'<textarea class="fork-src" hidden aria-hidden="true">{esc(step["output"] or "")}</textarea></div>')


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
    made = f'<div class="trace-lineage">{esc(lineage_line(run, first=1))}</div>' if run.get("forked_at") is not None else ""
    return (f'<div class="trace-head">{badge(outcome_of(run))} <span class="facts">{facts}</span>{made}'
            f'<div class="trace-q">Q: {esc(run["question"])}</div>{follows}</div>')


def _answer(run: dict) -> str:
    answer = run.get("answer")
    shown = esc(str(answer)) if answer is not None else "(no answer)"
    expected = ""
    if run.get("expected") is not None:
        expected = f' · expected {esc(str(run["expected"]))}: {"correct" if run.get("correct") else "wrong"}'
    return f'<div class="trace-answer outcome-{outcome_of(run).key}">Answer: <b>{shown}</b>{expected}</div>'


def render_run(run: dict | None, marks: Marks = Marks()) -> str:
    """The whole trace of a stored run; `marks` adds fork controls or a comparison's marks."""
    if run is None:
        return '<div class="trace empty">No such run.</div>'
    steps, strategy = run.get("steps") or [], run["strategy"]
    has_logprobs = any((s.get("meta") or {}).get("logprobs") for s in steps)
    hint = '<div class="fork-hint">Fork here edits a step in place and runs on from it; click a token to branch ' \
           'at one of its alternatives.</div>' if marks.forkable else ""
    cards = "".join(step_card(s, strategy, marks, run.get("forked_at")) for s in steps)
    return (f'<div class="trace{" forkable" if marks.forkable else ""}" data-run="{esc(run["id"])}">{run_header(run)}'
            f'{waterfall(steps, _labels(steps, strategy))}{legend() if has_logprobs else ""}{hint}'
            f'<div class="steps">{cards}</div>{_answer(run)}{_run_error(run)}</div>')


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
