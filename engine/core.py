"""`load_model` and `Engine`: a loaded GGUF model with its tokenizer, chat template and generation."""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

import torch

from .beam_search import beam_search
from .chat_template import ChatTemplate
from .generate import Completion, ContextLengthError, generate
from .gguf_file import GGUFFile
from .loader import build_transformer, default_model_path, describe_gguf, model_args
from .model import ModelArgs
from .sampling import SamplingParams
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use device='cpu'")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}' is not supported; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


class Engine:
    """One model in memory: tokenize, chat-format, score (logits) and generate."""

    def __init__(self, gguf: GGUFFile, device: torch.device, dtype: torch.dtype, llama_cpp_numerics: bool):
        self.path = gguf.path
        self.args: ModelArgs = model_args(gguf)
        self.tokenizer = Tokenizer.from_gguf(gguf)
        tokens = self.tokenizer.tokens
        token_text = lambda i: tokens[i] if i is not None and 0 <= i < len(tokens) else ""  # noqa: E731
        self.chat_template = ChatTemplate(gguf.get("tokenizer.chat_template"),
                                          token_text(self.tokenizer.bos_id), token_text(self.tokenizer.eos_id))
        self.model = build_transformer(gguf, self.args, device, dtype, llama_cpp_numerics)
        self.device, self.dtype = device, dtype
        self._lock = threading.Lock()  # one generation at a time: the KV cache lives on the model
        self.info = self._describe(gguf)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.chat_template.render(messages, add_generation_prompt)

    @torch.inference_mode()
    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """float32 logits (len(token_ids), vocab) of one full forward pass, no cache."""
        self._check_length(token_ids)
        tokens = torch.tensor([token_ids], device=self.device)
        positions = torch.arange(len(token_ids), device=self.device).unsqueeze(0)
        return self.model(tokens, positions)[0].cpu()

    def generate(self, prompts: list[str] | str, params: SamplingParams | list[SamplingParams] | None = None, *,
                 max_tokens: int | None = None, stop: list[str] | None = None) -> list[Completion]:
        """Completions of text prompts (BOS added per the model's tokenizer), `n` per prompt, prompt-major.

        `params` is one SamplingParams for all prompts or one per prompt (default: greedy);
        `max_tokens` and `stop`, when given, override the params' own.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        per_prompt = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"got {len(per_prompt)} SamplingParams for {len(prompts)} prompts")
        overrides = {k: v for k, v in (("max_tokens", max_tokens), ("stop", stop)) if v is not None}
        per_prompt = [replace(p, **overrides).validate(self.args.vocab_size) for p in per_prompt]
        encoded = [self.tokenizer.encode(p) for p in prompts]
        with self._lock:
            if any(p.num_beams > 1 for p in per_prompt):
                return [c for i, (ids, p) in enumerate(zip(encoded, per_prompt)) for c in self._beam_or_sample(ids, p, i)]
            return generate(self.model, self.tokenizer, encoded, per_prompt)

    def _beam_or_sample(self, ids: list[int], params: SamplingParams, index: int) -> list[Completion]:
        if params.num_beams > 1:
            return beam_search(self.model, self.tokenizer, ids, params, index)
        completions = generate(self.model, self.tokenizer, [ids], [params])
        return [replace(c, prompt_index=index) for c in completions]

    def _check_length(self, token_ids: list[int]) -> None:
        if not token_ids:
            raise ValueError("token_ids is empty")
        if len(token_ids) > self.args.max_seq_len:
            raise ContextLengthError(f"{len(token_ids)} tokens exceed the model's context of {self.args.max_seq_len}")
        bad = [t for t in token_ids if not 0 <= t < self.args.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{self.args.vocab_size - 1})")

    def _describe(self, gguf: GGUFFile) -> dict:
        return {**describe_gguf(gguf), "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}


def model_info(path: str | Path | None = None) -> dict:
    """What a GGUF holds (architecture, size, tensor types, context, vocab), without loading weights."""
    return describe_gguf(GGUFFile(path if path is not None else default_model_path()))


def load_model(path: str | Path | None = None, device: str = "auto", dtype: str | torch.dtype | None = None,
               llama_cpp_numerics: bool | None = None) -> Engine:
    """Load a LLaMA-family GGUF (None: the default SmolLM2-135M-Instruct shipped with the package).

    `llama_cpp_numerics` (default: on for float32) rounds activations as llama.cpp's CPU
    matmuls do, so greedy outputs match llama.cpp's token for token.
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    gguf = GGUFFile(path if path is not None else default_model_path())
    if llama_cpp_numerics is None:
        llama_cpp_numerics = dtype == torch.float32
    return Engine(gguf, device, dtype, llama_cpp_numerics)
