"""Pick the model backend the strategies talk to: all are LangChain chat models."""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from prompts.trace import RunInfo

from .constraints import ConstraintCarrier, llama_cpp_grammar, openai_chat_class

BACKENDS = ("engine", "llamacpp", "openai")
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # where `reason serve` listens
OPENAI_PARAMS = {"temperature", "top_p", "max_tokens", "seed", "frequency_penalty", "presence_penalty"}


@dataclass
class BackendChoice:
    backend: str = "engine"
    model_path: str | None = None
    device: str = "auto"
    dtype: str | None = None
    sampling: dict = field(default_factory=dict)  # engine.sampling.sampling_knobs() names -> values
    base_url: str | None = None  # openai: the server's URL ending in /v1 (default: `reason serve` on this machine)
    api_key: str | None = None  # openai: the server's key (default: $OPENAI_API_KEY, else none)
    engine_options: dict = field(default_factory=dict)  # engine: load_model keywords (weights, kv_cache_mb, …)


def chat_model(choice: BackendChoice) -> tuple[BaseChatModel, RunInfo]:
    """The chat model for a backend and the RunInfo every trace of it records."""
    if choice.backend == "llamacpp":
        return _llama_cpp(choice)
    if choice.backend == "openai":
        return _openai(choice)
    if choice.backend != "engine":
        raise ValueError(f"backend '{choice.backend}' is not available; choose one of {', '.join(BACKENDS)}")
    from engine import load_model

    engine = load_model(choice.model_path, **{"device": choice.device, "dtype": choice.dtype, **choice.engine_options})
    return engine_chat_model(engine, choice.sampling)


def engine_chat_model(engine, sampling: dict, fingerprint: str | None = None,
                      logprobs: int | None = None) -> tuple[BaseChatModel, RunInfo]:
    """A chat model over an already-loaded engine with these sampling settings (None: the default), and its RunInfo.

    `fingerprint` is the weights file's, when the caller computed it once (`model_fingerprint`);
    `logprobs` asks for each token's log-probability and that many alternatives (the web app's trace shows them).
    """
    from engine.sampling_params import sampling_knobs
    from engine.serving.langchain import EngineChatModel

    knobs = set(sampling_knobs())
    model = EngineChatModel(engine=engine, logprobs=logprobs,
                            **{k: v for k, v in sampling.items() if k in knobs and v is not None})
    return model, RunInfo(model_id=engine.info["name"], backend="engine", sampling=model.sampling_params().__dict__,
                          model_hash=fingerprint or model_fingerprint(engine.path))


def _serial_llama_cpp_class():
    from langchain_community.chat_models import ChatLlamaCpp
    from pydantic import PrivateAttr

    class SerialChatLlamaCpp(ConstraintCarrier, ChatLlamaCpp):
        """ChatLlamaCpp, one call at a time: a llama.cpp context crashes when threads share it; it takes
        GBNF and JSON-schema constraints as llama.cpp grammars."""

        _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)  # _generate streams via _stream

        def _carry(self, constraint: dict) -> tuple[dict, str | None]:
            return llama_cpp_grammar(constraint)

        def _generate(self, *args, **kwargs):
            with self._lock:
                return super()._generate(*args, **kwargs)

        def _stream(self, *args, **kwargs):
            with self._lock:
                yield from super()._stream(*args, **kwargs)

    return SerialChatLlamaCpp


def _llama_cpp(choice: BackendChoice) -> tuple[BaseChatModel, RunInfo]:
    """llama-cpp-python through LangChain's own llama.cpp chat class, on the same GGUF."""

    from engine import ModelFileError
    from engine.loader import default_model_path

    path = Path(choice.model_path) if choice.model_path else default_model_path()
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path} (give the path of a .gguf file)")
    model_class = _serial_llama_cpp_class()
    sampling = {"temperature": 0.0, "max_tokens": 512, **choice.sampling}
    renamed = {"repetition_penalty": "repeat_penalty"}
    # ChatLlamaCpp has no min_p, typical_p or OpenAI penalties: those are left out, and out of the record
    sampling = {k: v for k, v in sampling.items() if renamed.get(k, k) in model_class.model_fields}
    model = model_class(model_path=str(path), n_ctx=4096, n_threads=2, n_batch=512, verbose=False,
                        **{renamed.get(k, k): v for k, v in sampling.items()})
    return model, RunInfo(model_id=path.stem, backend="llamacpp", sampling=sampling, model_hash=model_fingerprint(path))


def _openai(choice: BackendChoice) -> tuple[BaseChatModel, RunInfo]:
    """Any OpenAI-compatible server (ours: `reason serve`) through LangChain's ChatOpenAI.

    `model_path` names the served model (default: the server's first); top_k, min_p and
    repetition_penalty go as extra body fields, which our server and llama.cpp's accept; so do
    strategies' output constraints, in the field the server follows (app/constraints.py).
    """
    base_url = choice.base_url or DEFAULT_BASE_URL
    # ChatOpenAI refuses to start without a key; local servers without --api-key ignore it
    api_key = choice.api_key or os.environ.get("OPENAI_API_KEY") or "none"
    model_name = choice.model_path or _first_model(base_url, api_key)
    sampling = {"temperature": 0.0, "max_tokens": 512, **choice.sampling}
    extra = {k: v for k, v in sampling.items() if k not in OPENAI_PARAMS}
    model = openai_chat_class()(base_url=base_url, api_key=api_key, model=model_name, extra_body=extra or None,
                                **{k: v for k, v in sampling.items() if k in OPENAI_PARAMS})
    return model, RunInfo(model_id=model_name, backend="openai", sampling=sampling)


def _first_model(base_url: str, api_key: str) -> str:
    import openai

    try:
        models = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10).models.list().data
    except openai.OpenAIError as exc:
        raise ValueError(f"cannot list the models of {base_url} ({exc}); is the server running? "
                         "Start one with `reason serve`, or give the model name.") from exc
    if not models:
        raise ValueError(f"{base_url} serves no model")
    return models[0].id


def model_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 over the file size and its first and last MiB: cheap for multi-GB files, and it tells weights apart."""
    path = Path(path)
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(0, path.stat().st_size - chunk))
        digest.update(f.read(chunk))
    return digest.hexdigest()[:16]
