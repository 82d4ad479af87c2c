"""What every page of the web app shares: settings, the trace store and the one loaded model."""
from __future__ import annotations

import functools
import logging
import threading
import typing
from dataclasses import dataclass, field

from engine.sampling_params import SamplingParams, sampling_knobs
from prompts.template import PromptTemplate, Turns
from prompts.trace import RunInfo, Trace

from ..backends import engine_chat_model, model_fingerprint
from ..runner import DEFAULT_TEMPLATES, StrategyOptions, record_run
from ..settings import Settings
from ..store import Store
from ..templates import load_template
from ..tools import wiki_tool_factory
from .live_run import LiveRun
from .prompt_size import PrefillRate

log = logging.getLogger(__name__)

SAMPLING_KEYS = sampling_knobs()
LOGPROBS = 5  # alternatives kept per generated token: the trace colours tokens by probability and shows these


@dataclass
class AppState:
    """Settings, store and the loaded engine; the engine is swapped whole under a lock."""

    settings: Settings
    store: Store
    engine: object = None
    fingerprint: str = ""
    prefill: PrefillRate = field(default_factory=PrefillRate)  # how fast the loaded model reads prompts
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
            self.engine, self.fingerprint, self.prefill = engine, fingerprint, PrefillRate()
        log.info("model loaded: %s", engine.path)
        return engine.info

    def chat_model(self, sampling: dict) -> tuple[object, RunInfo]:
        """A chat model over the shared engine with these sampling settings, and its RunInfo; it returns
        each token's log-probability and top alternatives, for the trace."""
        with self._swap:
            engine, fingerprint = self.engine, self.fingerprint
        return engine_chat_model(engine, sampling, fingerprint, logprobs=LOGPROBS)

    def count_tokens(self, messages: list) -> int:
        """The prompt tokens these chat messages make with the loaded model's chat template."""
        model, _ = self.chat_model({})
        return len(model.engine.tokenizer.encode(model.prompt_text(messages)))

    @property
    def context_length(self) -> int:
        return int(self.engine.info["context_length"])

    def template(self, strategy: str, spec: str | None) -> PromptTemplate:
        """NAME@VERSION, NAME (its default version) or None (the strategy's own template, its default version)."""
        return load_template(self.store, spec or DEFAULT_TEMPLATES[strategy])

    def ask(self, question: str, strategy: str, spec: str | None, sampling: dict, options: StrategyOptions,
            live: LiveRun | None = None, history: Turns = ()) -> tuple[str, Trace]:
        """Run one question exactly as `reason ask` does (record_run), after the conversation's earlier
        (question, answer) turns; returns (run id, trace).

        With a LiveRun the model streams into it and its Stop ends the run (stored `stopped`, with
        the steps done so far and the cut-off call's text).
        """
        template = self.template(strategy, spec)
        model, info = self.chat_model(sampling)
        wiki = wiki_tool_factory(self.settings, "auto") if strategy == "react" else None
        run_id, trace, _ = record_run(self.store, question, strategy, model, info, template, options, wiki, live=live,
                                      history=history)
        if live is not None:
            for call in live.calls.values():
                self.prefill.learn(call.prompt_tokens, call.first_token_s)
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
