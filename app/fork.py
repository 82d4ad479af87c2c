"""Fork, branch and replay a stored run: the Python API behind `reason runs fork|replay` and the History page.

A fork runs the parent's strategy again from its start, through a ReplayChatModel and replayed
tools: every model call and tool call before the fork point is answered from the record (no model
work, no tool run), the step at the fork point gets the person's text (or is generated afresh),
and from there the strategy goes on with the real model and tools. The new run names its parent
and the step it forked at; its steps before that step equal the parent's. A branch is a fork whose
text is a step's output up to a token plus one of that token's alternatives, continued by the
model. A replay re-runs the whole run with every tool result from the record and says whether it
came out identical.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from engine.sampling_params import sampling_knobs
from prompts.template import PromptTemplate
from prompts.trace import RunInfo

from .replay_model import ReplayChatModel, Reply, recorded_reply
from .replay_tools import ReplaySandbox, ReplayWiki, ToolResult, ToolScript, edited_sandbox_output, recorded_result, runs_a_tool
from .run_diff import diff_runs
from .run_options import options_of
from .runner import Recorded, record_run
from .store import Store
from .templates import load_template


@dataclass(frozen=True)
class Edit:
    """What replaces the output of the step at the fork point."""

    text: str
    continued: bool = False  # the model goes on after `text` (a branch), instead of `text` being the whole output
    logprobs: list | None = None  # a branch: the kept tokens' and the alternative's [token, logprob, alternatives]


def fork(store: Store, run_id: str, at: int, model, info: RunInfo, *, edit: Edit | None = None,
         strategy: str | None = None, template: PromptTemplate | None = None,
         wiki_tool: Callable[[], object] | None = None, facts: dict | None = None) -> Recorded:
    """A new run that takes steps 0..at-1 from run `run_id`, gives step `at` the edited text (or generates it
    again), and continues with `model`; `strategy`/`template` may differ (another strategy only at step 0).
    `wiki_tool` makes the live Wikipedia tool, needed only by ReAct calls after the recorded ones."""
    parent = _parent(store, run_id)
    _check_point(parent, at, edit)
    strategy = strategy or parent["strategy"]
    if strategy != parent["strategy"] and at > 0:
        raise ValueError(f"a {strategy} run cannot take over the recorded steps of a {parent['strategy']} run: "
                         f"fork at step 0 to answer the question afresh with {strategy}")
    template = template or parent_template(store, parent, strategy)
    replies, results = script(parent["steps"], at, edit)
    lineage = {"kind": "branch" if edit and edit.continued else "fork", "edited": edit is not None,
               "continued": bool(edit and edit.continued),
               "changed": changes(parent, strategy, template, info), **(facts or {})}
    return _run(store, parent, at, strategy, template, ReplayChatModel(inner=model, replies=replies), info,
                ToolScript(results), wiki_tool, lineage, edit)


def branch(store: Store, run_id: str, at: int, token: int, alternative: str, model, info: RunInfo,
           **kwargs) -> Recorded:
    """Fork at step `at` with its output up to token `token` followed by `alternative` (one of that token's
    recorded alternatives), which the model continues."""
    step = _parent(store, run_id)["steps"][at] if at >= 0 else None
    tokens = ((step or {}).get("meta") or {}).get("logprobs")
    if not step or step["kind"] != "llm" or not tokens:
        raise ValueError(f"step {at} has no recorded tokens to branch at (only model calls made with log-probabilities do)")
    if not 0 <= token < len(tokens):
        raise ValueError(f"token {token} is out of range: step {at} has tokens 0..{len(tokens) - 1}")
    text, kept = "".join(t for t, _, _ in tokens[:token]), tokens[token]
    alternatives = dict((alt, logprob) for alt, logprob in kept[2])
    if alternative not in alternatives:
        raise ValueError(f"{alternative!r} is not one of token {token}'s alternatives: {', '.join(map(repr, alternatives))}")
    if not step["output"].startswith(text):
        raise ValueError(f"the tokens before token {token} do not spell step {at}'s output (a split character); "
                         f"branch at another token")
    edit = Edit(text + alternative, continued=True,
                logprobs=[*tokens[:token], [alternative, alternatives[alternative], kept[2]]])
    facts = {"token": token, "alternative": alternative, "replaced_token": kept[0]}
    return fork(store, run_id, at, model, info, edit=edit, facts=facts, **kwargs)


def replay(store: Store, run_id: str, model, info: RunInfo, wiki_tool: Callable[[], object] | None = None,
           deterministic: bool | None = None) -> Recorded:
    """Run `run_id` again with its template version and every tool result from the record; the new run's
    lineage says whether it came out identical, token for token, and whether the engine was deterministic."""
    parent = _parent(store, run_id)
    template = parent_template(store, parent, parent["strategy"])
    results = [recorded_result(s) for s in parent["steps"] if runs_a_tool(s)]
    lineage = {"kind": "replay", "changed": changes(parent, parent["strategy"], template, info),
               "deterministic": _deterministic(model) if deterministic is None else deterministic}
    recorded = _run(store, parent, 0, parent["strategy"], template, ReplayChatModel(inner=model, replies=[]), info,
                    ToolScript(results), wiki_tool, lineage, None)
    difference = diff_runs(parent, store.get_run(recorded.run_id))
    store.add_lineage(recorded.run_id, identical=difference["first_divergence"] is None,
                      first_divergence=difference["first_divergence"])
    return recorded


def script(steps: list[dict], at: int, edit: Edit | None) -> tuple[list[Reply], list[ToolResult]]:
    """The recorded model replies and tool results before step `at`, and the edited one at it."""
    replies = [recorded_reply(s) for s in steps[:at] if s["kind"] == "llm"]
    results = [recorded_result(s) for s in steps[:at] if runs_a_tool(s)]
    if edit is not None:
        step = steps[at]
        if step["kind"] == "llm":
            replies.append(Reply(edit.text, meta={"logprobs": edit.logprobs} if edit.logprobs else {},
                                 continued=edit.continued, edited=True))
        else:
            output = edited_sandbox_output(edit.text) if step["name"] == "sandbox" else edit.text
            results.append(ToolResult(step["name"], step["input"], output, meta={"kind": "ok"}, edited=True))
    return replies, results


def parent_template(store: Store, parent: dict, strategy: str) -> PromptTemplate | None:
    """The template version the parent ran (None: another strategy's default)."""
    if strategy != parent["strategy"] or not parent.get("template_name"):
        return None
    version = parent.get("template_version") or 0
    return load_template(store, f"{parent['template_name']}@{version}" if version else parent["template_name"])


def changes(parent: dict, strategy: str, template: PromptTemplate | None, info: RunInfo) -> dict:
    """What a fork does differently from its parent: strategy, template version, model, sampling knobs."""
    changed = {}
    if strategy != parent["strategy"]:
        changed["strategy"] = strategy
    if template is not None and (template.name, template.version) != (parent["template_name"], parent["template_version"]):
        changed["template"] = f"{template.name}@{template.version}"
    if (info.model_hash or info.model_id) != (parent.get("model_hash") or parent.get("model_id")):
        changed["model"] = info.model_id
    knobs, before = knob_values(info.sampling), knob_values(parent.get("sampling") or {})
    sampling = {k: v for k, v in knobs.items() if k in before and before[k] != v}  # a backend records only its own
    if sampling:
        changed["sampling"] = sampling
    return changed


def knob_values(sampling: dict) -> dict:
    """The per-request sampling settings of a recorded sampling dict (the engine records all its fields)."""
    return {k: sampling[k] for k in sampling_knobs() if k in sampling}


def _run(store, parent, at, strategy, template, model, info, script_, wiki_tool, lineage, edit) -> Recorded:
    options = replace(options_of(parent) if strategy == parent["strategy"] else options_of({"strategy": strategy}),
                      sandbox=ReplaySandbox(script_))
    wiki = (lambda: ReplayWiki(script_, wiki_tool)) if strategy == "react" else None
    if (parent.get("counters") or {}).get("earlier_turns"):
        lineage["earlier_turns_missing"] = parent["counters"]["earlier_turns"]  # a run does not store its conversation
    run_id = store.start_run(parent["question"], strategy, expected=parent.get("expected"), model_id=info.model_id,
                             backend=info.backend, sampling=info.sampling, model_hash=info.model_hash,
                             template_name=template.name if template else "",
                             template_version=template.version if template else 0,
                             parent_run_id=parent["id"], forked_at=at, lineage=lineage)
    recorded = record_run(store, parent["question"], strategy, model, info, template, options, wiki,
                          expected=parent.get("expected"), run_id=run_id)
    held = steps_held(parent["steps"], [s.__dict__ for s in recorded.trace.steps], at)
    store.add_lineage(run_id, replayed_calls=model.calls_replayed, replayed_tools=script_.replayed,
                      **({} if held is None else {"replay_diverged_at": held}))
    if edit is not None and at < len(recorded.trace.steps):
        store.add_step_meta(run_id, at, **({"branched_at_token": lineage["token"]} if "token" in lineage else
                                           {"edited": True, **({"continued": True} if edit.continued else {})}))
    return recorded


def steps_held(parent_steps: list[dict], steps: list[dict], at: int) -> int | None:
    """The first step before `at` where the re-run strategy did not retrace its parent (None: all held)."""
    for i in range(at):
        if i >= len(steps) or any(steps[i][k] != parent_steps[i][k] for k in ("kind", "name", "output")):
            return i
    return None


def _parent(store: Store, run_id: str) -> dict:
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"no run with id {run_id}")
    return run


def _check_point(parent: dict, at: int, edit: Edit | None) -> None:
    """Refuse a fork point outside the run, or an edit of a step that is neither a model call nor a tool call."""
    steps = parent["steps"]
    if not steps:
        raise ValueError(f"run {parent['id']} has no steps to fork from ({parent['status']}); re-run it instead")
    if not 0 <= at < len(steps):
        raise ValueError(f"step {at} is out of range: run {parent['id']} has steps 0..{len(steps) - 1} "
                         f"(as `reason runs show` numbers them)")
    step = steps[at]
    if edit is not None and (step["kind"] not in ("llm", "tool") or (step.get("meta") or {}).get("repeated")):
        raise ValueError(f"step {at} is a {step['kind']} the strategy wrote itself: only a model call's or a tool's "
                         f"output can be replaced")
    if edit is not None and edit.continued and step["kind"] != "llm":
        raise ValueError(f"step {at} is a tool call: only a model call can be continued from edited text")


def _deterministic(model) -> bool:
    """Whether the model is our engine in batch-invariant mode (the same tokens alone or in any batch), for
    every request or for this chat model's."""
    return bool(getattr(getattr(model, "engine", None), "deterministic", False) or getattr(model, "deterministic", False))
