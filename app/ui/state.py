"""What every page of the web app shares: settings, the trace store and the one loaded model."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from prompts.template import PromptTemplate, TemplateError
from prompts.trace import RunInfo, Trace

from ..backends import model_fingerprint
from ..runner import DEFAULT_TEMPLATES, StrategyOptions, run_question
from ..settings import Settings
from ..store import Store
from ..templates import load_template
from ..tools import wiki_tool_factory
from .live_run import LiveRun

log = logging.getLogger(__name__)

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens", "seed")


@dataclass
class AppState:
    """Settings, store and the loaded engine; the engine is swapped whole under a lock."""

    settings: Settings
    store: Store
    engine: object = None
    fingerprint: str = ""
    _swap: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: Settings, model_path: str | None = None) -> "AppState":
        """Open the store and load the model once (the default model when no path is given)."""
        state = cls(settings, Store.open(settings))
        state.load(model_path or settings.model_path)
        return state

    def load(self, path: str | None) -> dict:
        """Load a GGUF and make it the shared model; raises (and keeps the old one) when it cannot."""
        from engine import load_model

        engine = load_model(path, **self.settings.engine_options())
        fingerprint = model_fingerprint(engine.path)
        with self._swap:
            self.engine, self.fingerprint = engine, fingerprint
        log.info("model loaded: %s", engine.path)
        return engine.info

    def chat_model(self, sampling: dict) -> tuple[object, RunInfo]:
        """A chat model over the shared engine with these sampling settings, and its RunInfo."""
        from engine.langchain import EngineChatModel

        with self._swap:
            engine, fingerprint = self.engine, self.fingerprint
        values = {k: v for k, v in sampling.items() if k in SAMPLING_KEYS and v is not None}
        model = EngineChatModel(engine=engine, **values)
        info = RunInfo(model_id=engine.info["name"], backend="engine", sampling=model.sampling_params().__dict__,
                       model_hash=fingerprint)
        return model, info

    def template(self, strategy: str, spec: str | None) -> PromptTemplate:
        """NAME@VERSION, NAME (latest) or None (the strategy's own template, latest)."""
        return load_template(self.store, spec or DEFAULT_TEMPLATES[strategy])

    def ask(self, question: str, strategy: str, spec: str | None, sampling: dict, options: StrategyOptions,
            live: LiveRun | None = None) -> tuple[str, Trace]:
        """Run one question exactly as `reason ask` does: start_run, run_question, finish_run.

        With a LiveRun the model streams into it and its Stop ends the run (stored as an error,
        with the steps done so far).
        """
        template = self.template(strategy, spec)
        if template.strategy != strategy:
            raise TemplateError(f"template {template.name}@{template.version} is for {template.strategy}, not {strategy}")
        model, info = self.chat_model(sampling)
        if live is not None:
            model, info = model.with_config(callbacks=[live]), live.watch(info)
        wiki = wiki_tool_factory(self.settings, "auto") if strategy == "react" else None
        run_id = self.store.start_run(question, strategy, model_id=info.model_id, backend=info.backend,
                                      sampling=info.sampling, model_hash=info.model_hash,
                                      template_name=template.name, template_version=template.version)
        trace = run_question(strategy, question, model, info, template, options, wiki_tool=wiki)
        if live is not None:
            trace = live.settle(trace)
        self.store.finish_run(run_id, trace)
        return run_id, trace


def sampling_from(values: dict) -> dict:
    """UI numbers -> sampling settings: ints where the engine wants ints, a missing seed stays None."""
    out = {k: values.get(k) for k in SAMPLING_KEYS}
    for key in ("top_k", "max_tokens", "seed"):
        if out[key] is not None:
            out[key] = int(out[key])
    return out
