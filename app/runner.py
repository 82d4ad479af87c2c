"""Run one question with one strategy: the strategies, their default templates and options."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel

from prompts import cot, direct, pal, react
from prompts.template import PromptTemplate, load_shipped
from prompts.trace import RunInfo, Trace

log = logging.getLogger(__name__)

STRATEGIES = ("direct", "cot", "pal", "react")
DEFAULT_TEMPLATES = {"direct": "direct", "cot": "cot", "pal": "pal", "react": "react"}


@dataclass
class StrategyOptions:
    self_consistency: int = 1
    sc_temperature: float = 0.7
    max_steps: int = 7  # ReAct
    react_fallback: bool = True  # ReAct -> CoT-SC when Finish never comes
    fix_errors: bool = True  # PAL
    timeout_s: float = 5.0  # PAL sandbox


def run_question(strategy: str, question: str, model: BaseChatModel, info: RunInfo, template: PromptTemplate | None = None,
                 options: StrategyOptions = StrategyOptions(), wiki_tool: Callable[[], object] | None = None) -> Trace:
    """Answer `question` with `strategy`; returns the full trace (errors are recorded, not raised)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    template = template or load_shipped(DEFAULT_TEMPLATES[strategy])
    if template.strategy != strategy:
        raise ValueError(f"template '{template.name}' is for strategy '{template.strategy}', not '{strategy}'")
    try:
        return _run(strategy, question, model, info, template, options, wiki_tool)
    except Exception as exc:  # a backend can fail in any way (network, server, model); the trace records it
        log.exception("%s run failed", strategy)
        trace = info.new_trace(question, strategy, template)
        return trace.finish(None, error=f"{type(exc).__name__}: {exc}")


def _run(strategy, question, model, info, template, options, wiki_tool) -> Trace:
    k, temperature = options.self_consistency, options.sc_temperature
    if strategy == "direct":
        return direct.run(question, model, template, info)
    if strategy == "cot":
        return cot.run(question, model, template, info, self_consistency=k, temperature=temperature)
    if strategy == "pal":
        return pal.run(question, model, template, info, fix_errors=options.fix_errors, self_consistency=k,
                       temperature=temperature, timeout_s=options.timeout_s)
    if wiki_tool is None:
        raise ValueError("the react strategy needs a Wikipedia tool")
    fallback = load_shipped("cot") if options.react_fallback else None
    return react.run(question, model, template, wiki_tool(), info, max_steps=options.max_steps,
                     fallback_template=fallback, fallback_k=max(k, 3))
