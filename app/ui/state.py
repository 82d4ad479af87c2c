"""What every page of the web app shares: settings, the trace store and the one loaded model."""
from __future__ import annotations

import functools
import logging
import threading
import typing
from dataclasses import dataclass, field

from engine.sampling_params import SamplingParams, sampling_knobs
from prompts.template import PromptTemplate
from prompts.trace import RunInfo, Trace

from ..backends import engine_chat_model, model_fingerprint
from ..runner import DEFAULT_TEMPLATES, StrategyOptions, record_run
from ..settings import Settings
from ..store import Store
from ..templates import load_template
from ..tools import wiki_tool_factory
from .live_run import LiveRun

log = logging.getLogger(__name__)

SAMPLING_KEYS = sampling_knobs()


@dataclass
class AppState:
    """Settings, store and the loaded engine; the engine is swapped whole under a lock."""

    settings: Settings
    store: Store
    engine: object = None
    fingerprint: str = ""
    _swap: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: Settings, model_path: str | None = None) -> AppState:
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
        with self._swap:
            engine, fingerprint = self.engine, self.fingerprint
        return engine_chat_model(engine, sampling, fingerprint)

    def template(self, strategy: str, spec: str | None) -> PromptTemplate:
        """NAME@VERSION, NAME (latest) or None (the strategy's own template, latest)."""
        return load_template(self.store, spec or DEFAULT_TEMPLATES[strategy])

    def ask(self, question: str, strategy: str, spec: str | None, sampling: dict, options: StrategyOptions,
            live: LiveRun | None = None) -> tuple[str, Trace]:
        """Run one question exactly as `reason ask` does (record_run); returns (run id, trace).

        With a LiveRun the model streams into it and its Stop ends the run (stored as an error,
        with the steps done so far).
        """
        template = self.template(strategy, spec)
        model, info = self.chat_model(sampling)
        wiki = wiki_tool_factory(self.settings, "auto") if strategy == "react" else None
        run_id, trace, _ = record_run(self.store, question, strategy, model, info, template, options, wiki, live=live)
        return run_id, trace


def sampling_from(values: dict) -> dict:
    """UI numbers -> sampling settings: ints where SamplingParams has ints, a missing value stays None."""
    out = {key: values.get(key) for key in SAMPLING_KEYS}
    for key in _int_knobs():
        if out[key] is not None:
            out[key] = int(out[key])
    return out


@functools.cache
def _int_knobs() -> frozenset[str]:
    hints = typing.get_type_hints(SamplingParams)
    return frozenset(k for k in SAMPLING_KEYS if int in (hints[k], *typing.get_args(hints[k])))
