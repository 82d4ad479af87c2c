"""Stored runs as Markdown: a header, every step (prompt, output, program, observation, votes) and the answer."""
from __future__ import annotations

import json
import re


def fenced(text: str, language: str = "") -> str:
    """A code block whose fence is longer than any backtick run inside, so model output cannot break out."""
    longest = max((len(m) for m in re.findall(r"`+", text or "")), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text or ''}\n{fence}"


def run_header(run: dict) -> str:
    """One line: strategy, template version, model, status, time, tokens."""
    seconds = (run.get("duration_ms") or 0) / 1000
    tokens = (run.get("prompt_tokens") or 0) + (run.get("completion_tokens") or 0)
    return (f"**run** `{run['id']}` · **{run['strategy']}** · template **{run['template_name']} "
            f"v{run['template_version']}** · {run.get('model_id') or '?'} ({run.get('backend') or '?'}) · "
            f"status **{run['status']}** · {seconds:.1f} s · {tokens} tokens")


def _step_title(step: dict) -> str:
    timing = f"{step.get('duration_ms') or 0:.0f} ms"
    if step["kind"] == "llm":
        timing += f", {step['prompt_tokens']} prompt + {step['completion_tokens']} completion tokens"
    return f"#### {step['idx'] + 1}. {step['kind']} · {step.get('name') or ''} ({timing})"


def _sandbox(step: dict) -> list[str]:
    parts = ["Program:", fenced(step["input"], "python")]
    try:
        result = json.loads(step["output"] or "{}")
    except json.JSONDecodeError:
        result = {"value": step["output"]}
    parts.append(f"Returned: `{result.get('value')!r}`")
    if result.get("stdout"):
        parts += ["Printed:", fenced(result["stdout"])]
    return parts


def _step_body(step: dict, strategy: str) -> list[str]:
    kind, meta = step["kind"], step.get("meta") or {}
    if kind == "llm":
        prompt = f"<details><summary>prompt</summary>\n\n{fenced(step['input'])}\n\n</details>"
        language = "python" if strategy == "pal" else ""
        thinking = [f"<details><summary>reasoning</summary>\n\n{fenced(meta['reasoning'])}\n\n</details>"] \
            if meta.get("reasoning") else []
        return [prompt, *thinking, fenced(step["output"], language)]
    if kind == "tool" and step.get("name") == "sandbox":
        return _sandbox(step)
    if kind == "tool":
        repeated = " (repeated action, not run again)" if meta.get("repeated") else ""
        return [f"**Action:** {step.get('name')}[{step['input']}]{repeated}", "**Observation:**",
                fenced(step["output"])]
    if kind == "vote":
        counts = meta.get("counts") or {}
        table = "\n".join(f"| {answer} | {count} |" for answer, count in counts.items())
        return [f"Samples answered: `{step['input']}`", "| answer | votes |\n| --- | --- |\n" + table,
                f"**Winner:** {step['output']}"]
    return ["Could not parse:", fenced(step["input"])]


def _step_parts(step: dict, strategy: str) -> list[str]:
    parts = [_step_title(step), *_step_body(step, strategy)]
    if step.get("error"):
        parts.append(f"**Error:**\n\n{fenced(step['error'])}")  # a fence opens a line of its own
    return parts


def render_live(strategy: str, steps: list[dict], pending: list[dict]) -> str:
    """A run still going: the steps recorded so far, then the model calls still generating.

    A pending call is {"text", "tokens", "seconds", "running"}. Nothing here names the question,
    so the page's finished trace ("Q: …") is told apart from a live one.
    """
    parts = [f"*live trace · {strategy} · steps appear as they finish*"]
    for step in steps:
        parts += _step_parts(step, strategy)
    language = "python" if strategy == "pal" else ""
    for i, call in enumerate(pending, start=len(steps) + 1):
        state = "generating…" if call["running"] else "finished"
        parts.append(f"#### {i}. llm · {state} ({call['tokens']} tokens, {call['seconds']:.1f} s)")
        parts.append(fenced(call["text"], language))
    return "\n\n".join(parts)


def render_run(run: dict | None) -> str:
    """The whole trace of a stored run, step by step."""
    if run is None:
        return "*No such run.*"
    parts = [run_header(run), f"**Q:** {run['question']}"]
    for step in run.get("steps") or []:
        parts += _step_parts(step, run["strategy"])
    answer = run.get("answer")
    parts.append(f"### Answer: {answer if answer is not None else '(no answer)'}")
    if run.get("expected") is not None:
        parts.append(f"expected {run['expected']}: {'correct' if run.get('correct') else 'wrong'}")
    if run.get("error"):
        parts.append(f"**Run error:**\n\n{fenced(run['error'])}")
    return "\n\n".join(parts)


def answer_text(run: dict) -> str:
    """The answer line shown in the chat history."""
    if run.get("answer") is not None:
        return f"{run['answer']}\n\n_{run['strategy']} · {run['template_name']} v{run['template_version']} · " \
               f"run {run['id']}_"
    return f"(no answer: {run.get('error') or run['status']})\n\n_{run['strategy']} · run {run['id']}_"
