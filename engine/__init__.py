"""Our LLaMA-family inference engine: GGUF loading, packed weights, model, tokenizer, continuous batching.

Names are imported on first use (PEP 562), so `import engine` and the torch-free modules
(sampling_params, completion) start fast: torch loads only with the first model.
"""
from __future__ import annotations

import importlib

_WHERE = {
    "Engine": "core", "load_model": "core", "model_info": "core",
    "Completion": "completion", "ContextLengthError": "completion", "ParamError": "completion",
    "ModelFileError": "gguf_file", "ModelArgs": "model",
    "QueueFullError": "request", "RequestHandle": "request", "TokenEvent": "request",
    "SamplingParams": "sampling_params", "WeightCache": "weight_cache",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
