"""Our LLaMA-family inference engine: GGUF loading, packed weights, model, tokenizer, continuous batching."""
from .completion import Completion, ContextLengthError
from .core import Engine, load_model, model_info
from .gguf_file import ModelFileError
from .model import ModelArgs
from .request import QueueFullError, RequestHandle, TokenEvent
from .sampling import SamplingParams

__all__ = ["Engine", "load_model", "model_info", "Completion", "ContextLengthError", "ModelFileError", "ModelArgs",
           "SamplingParams",
           "QueueFullError", "RequestHandle", "TokenEvent"]
