"""Pick the model backend the strategies talk to: all are LangChain chat models."""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from prompts.trace import RunInfo

BACKENDS = ("engine", "llamacpp")


@dataclass
class BackendChoice:
    backend: str = "engine"
    model_path: str | None = None
    device: str = "auto"
    dtype: str | None = None
    sampling: dict = field(default_factory=dict)  # temperature, top_p, top_k, min_p, repetition_penalty, max_tokens, seed


def chat_model(choice: BackendChoice) -> tuple[BaseChatModel, RunInfo]:
    """The chat model for a backend and the RunInfo every trace of it records."""
    if choice.backend == "llamacpp":
        return _llama_cpp(choice)
    if choice.backend != "engine":
        raise ValueError(f"backend '{choice.backend}' is not available; choose one of {', '.join(BACKENDS)}")
    from engine import load_model
    from engine.langchain import EngineChatModel

    engine = load_model(choice.model_path, device=choice.device, dtype=choice.dtype)
    model = EngineChatModel(engine=engine, **choice.sampling)
    return model, RunInfo(model_id=engine.info["name"], backend="engine", sampling=model.sampling_params().__dict__,
                          model_hash=model_fingerprint(engine.path))


def _serial_llama_cpp_class():
    from langchain_community.chat_models import ChatLlamaCpp
    from pydantic import PrivateAttr

    class SerialChatLlamaCpp(ChatLlamaCpp):
        """ChatLlamaCpp, one call at a time: a llama.cpp context crashes when threads share it."""

        _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)  # _generate streams via _stream

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
    sampling = {"temperature": 0.0, "max_tokens": 512, **choice.sampling}
    renamed = {"repetition_penalty": "repeat_penalty"}
    kwargs = {renamed.get(k, k): v for k, v in sampling.items() if k != "min_p"}
    model = _serial_llama_cpp_class()(model_path=str(path), n_ctx=4096, n_threads=2, n_batch=512, verbose=False, **kwargs)
    return model, RunInfo(model_id=path.stem, backend="llamacpp", sampling=sampling, model_hash=model_fingerprint(path))


def model_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 over the file size and its first and last MiB: cheap for multi-GB files, and it tells weights apart."""
    path = Path(path)
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(0, path.stat().st_size - chunk))
        digest.update(f.read(chunk))
    return digest.hexdigest()[:16]
