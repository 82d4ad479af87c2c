"""Run one question with one strategy, and record it: the strategies, their default templates and options.

`record_run` is the one way a run is made and stored (`reason ask`, the Chat and History pages, batches).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from langchain_core.language_models import BaseChatModel

from prompts import cot, cot_adaptive, direct, pal, react
from prompts.scoring import score
from prompts.template import PromptTemplate, TemplateError, Turns, load_shipped
from prompts.trace import RunInfo, Trace
from prompts.voting import VotePlan

from . import telemetry
from .errors import RunStopped, user_errors

if TYPE_CHECKING:
    from .store import Store
    from .ui.live_run import LiveRun

log = logging.getLogger(__name__)

STRATEGIES = ("direct", "cot", "pal", "react")
DEFAULT_TEMPLATES = {strategy: strategy for strategy in STRATEGIES}  # each strategy's shipped template


@dataclass(frozen=True)
class StrategyOptions:
    self_consistency: int = 1
    sc_temperature: float = 0.7
    max_steps: int = 7  # ReAct
    react_fallback: bool = True  # ReAct -> CoT-SC when Finish never comes
    fix_errors: bool = True  # PAL
    timeout_s: float = 5.0  # PAL sandbox
    sandbox: Callable | None = None  # PAL: runs each program (None: the sandbox); a fork replays recorded runs
    sc_stop: str | None = None  # CoT: stop sampling once the vote is decided (prompts.voting.STOP_RULES)
    sc_round: int = 2  # CoT adaptive self-consistency: paths per round
    sc_weighted: bool = False  # CoT: votes weighted by each path's probability

    def vote_plan(self) -> VotePlan | None:
        """The adaptive or weighted CoT vote these options ask for; None for plain self-consistency."""
        if self.self_consistency <= 1 or not (self.sc_stop or self.sc_weighted):
            return None
        return VotePlan(self.self_consistency, self.sc_round, self.sc_stop, self.sc_weighted)


DEFAULT_OPTIONS = StrategyOptions()

class Recorded(NamedTuple):
    run_id: str
    trace: Trace
    correct: bool | None  # None when no answer was expected


def record_run(store: Store, question: str, strategy: str, model: BaseChatModel, info: RunInfo,
               template: PromptTemplate | None = None, options: StrategyOptions = DEFAULT_OPTIONS,
               wiki_tool: Callable[[], object] | None = None, *, expected: str | None = None,
               batch_id: str | None = None, question_id: str | None = None, run_id: str | None = None,
               live: LiveRun | None = None, history: Turns = ()) -> Recorded:
    """Start a run, answer it, score it against `expected`, finish it; `run_id` completes a run left `running`.

    `history`: the conversation's earlier (question, answer) turns, which the prompt carries before the question.
    A failure the user caused is stored in the run; a bug is stored as an `error` run, then raised.
    With a LiveRun the model streams into it, its Stop ends the run (`stopped`), and the run keeps the steps done.
    """
    template = checked_template(strategy, template)
    if live is not None:
        model, info = model.with_config(callbacks=[live]), live.watch(info)
    run_id = run_id or store.start_run(
        question, strategy, expected=expected, batch_id=batch_id, question_id=question_id, model_id=info.model_id,
        backend=info.backend, sampling=info.sampling, model_hash=info.model_hash, template_name=template.name,
        template_version=template.version)
    try:
        trace = run_question(strategy, question, model, info, template, options, wiki_tool, history)
    except Exception as exc:
        store.fail_run(run_id, f"{type(exc).__name__}: {exc}")  # stored honestly, then the bug surfaces
        raise
    if live is not None:
        trace = live.settle(trace)
    correct = score(trace.answer, expected).correct if expected is not None else None
    store.finish_run(run_id, trace, correct)
    telemetry.export_run(run_id, trace, correct)  # as OpenTelemetry spans, when a collector is configured
    return Recorded(run_id, trace, correct)


def checked_template(strategy: str, template: PromptTemplate | None) -> PromptTemplate:
    """The template to run (the strategy's shipped one when None); TemplateError when it is for another strategy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    template = template or load_shipped(DEFAULT_TEMPLATES[strategy])
    if template.strategy != strategy:
        raise TemplateError(f"template '{template.name}@{template.version}' is for strategy '{template.strategy}', "
                            f"not '{strategy}'")
    return template


def run_question(strategy: str, question: str, model: BaseChatModel, info: RunInfo, template: PromptTemplate | None = None,
                 options: StrategyOptions = DEFAULT_OPTIONS, wiki_tool: Callable[[], object] | None = None,
                 history: Turns = ()) -> Trace:
    """Answer `question` with `strategy`; a failure the user caused ends the trace as an error (a Stop as
    `stopped`), a bug is raised."""
    template = checked_template(strategy, template)
    try:
        return _run(strategy, question, model, info, template, options, wiki_tool, tuple(history))
    except RunStopped as exc:
        return info.new_trace(question, strategy, template, history).finish(None, error=str(exc), stopped=True)
    except user_errors() as exc:
        log.warning("%s run failed: %s: %s", strategy, type(exc).__name__, exc)
        trace = info.new_trace(question, strategy, template, history)
        return trace.finish(None, error=f"{type(exc).__name__}: {exc}")


def _run(strategy, question, model, info, template, options, wiki_tool, history) -> Trace:
    k, temperature = options.self_consistency, options.sc_temperature
    if strategy == "direct":
        return direct.run(question, model, template, info, history=history)
    if strategy == "cot" and (plan := options.vote_plan()):
        return cot_adaptive.run(question, model, template, plan, info, temperature=temperature, history=history)
    if strategy == "cot":
        return cot.run(question, model, template, info, self_consistency=k, temperature=temperature, history=history)
    if strategy == "pal":
        return pal.run(question, model, template, info, fix_errors=options.fix_errors, self_consistency=k,
                       temperature=temperature, timeout_s=options.timeout_s, history=history,
                       sandbox=options.sandbox)
    if wiki_tool is None:
        raise ValueError("the react strategy needs a Wikipedia tool")
    fallback = load_shipped("cot") if options.react_fallback else None
    return react.run(question, model, template, wiki_tool(), info, max_steps=options.max_steps,
                     fallback_template=fallback, fallback_k=max(k, 3), history=history)
