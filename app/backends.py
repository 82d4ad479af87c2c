"""Pick the model backend the strategies talk to: all are LangChain chat models."""
from __future__ import annotations

from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel

from prompts.trace import RunInfo

BACKENDS = ("engine",)


@dataclass
class BackendChoice:
    backend: str = "engine"
    model_path: str | None = None
    device: str = "auto"
    dtype: str | None = None
    sampling: dict = field(default_factory=dict)  # temperature, top_p, top_k, min_p, repetition_penalty, max_tokens, seed


def chat_model(choice: BackendChoice) -> tuple[BaseChatModel, RunInfo]:
    """The chat model for a backend and the RunInfo every trace of it records."""
    if choice.backend != "engine":
        raise ValueError(f"backend '{choice.backend}' is not available yet; choose one of {', '.join(BACKENDS)}")
    from engine import load_model
    from engine.langchain import EngineChatModel

    engine = load_model(choice.model_path, device=choice.device, dtype=choice.dtype)
    model = EngineChatModel(engine=engine, **choice.sampling)
    return model, RunInfo(model_id=engine.info["name"], backend="engine", sampling=model.sampling_params().__dict__)
