"""`load_model` and `Engine`: a loaded GGUF model with its tokenizer, chat template and generation."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from .beam_search import beam_search
from .chat_template import ChatTemplate
from .completion import Completion, ParamError, check_prompt
from .compute import COMPUTE
from .gguf_file import GGUFFile
from .grammar import ConstraintCompiler
from .kv_pool import BlockPool, PoolExhausted
from .loader import build_transformer, default_model_path, describe_gguf, model_args, resident_bytes
from .model import ModelArgs
from .model_runner import ModelRunner, score_tokens
from .packing import check_kernels
from .perplexity import Perplexity, perplexity
from .quant_linear import PackedLinear
from .reasoning import ReasoningTags
from .request import RequestHandle
from .sampling import SamplingParams
from .scheduler import Scheduler
from .step_loop import StepLoop
from .tokenizer import Tokenizer
from .weight_cache import WeightCache

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


BLOCK_SIZE = 16
DEFAULT_KV_CACHE_MB = 2048


def cpu_has_fast_bf16() -> bool:
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" or cpu_has_fast_bf16() else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}' is not supported; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


class Engine:
    """One model in memory: tokenize, chat-format, score (logits) and generate."""

    def __init__(self, gguf: GGUFFile, device: torch.device, dtype: torch.dtype, llama_cpp_numerics: bool,
                 weights: str = "dense", kv_cache_mb: float | None = None, max_batch: int = 64,
                 weight_cache: WeightCache | None = None, kernels: str = "auto"):
        self.path = gguf.path
        self.args: ModelArgs = model_args(gguf)
        self.tokenizer = Tokenizer.from_gguf(gguf)
        tokens = self.tokenizer.tokens
        token_text = lambda i: tokens[i] if i is not None and 0 <= i < len(tokens) else ""  # noqa: E731
        self.chat_template = ChatTemplate(gguf.get("tokenizer.chat_template"),
                                          token_text(self.tokenizer.bos_id), token_text(self.tokenizer.eos_id))
        # built on the compute thread, which does all tensor work (see compute.py)
        self.model = COMPUTE.call(build_transformer, gguf, self.args, device, dtype, llama_cpp_numerics, weights=weights,
                                  weight_cache=weight_cache, kernels=kernels)
        self.device, self.dtype, self.weights = device, dtype, weights
        self.weight_cache = weight_cache
        self.pool = self._kv_pool(kv_cache_mb)
        self.reasoning_tags = ReasoningTags.of_template(gguf.get("tokenizer.chat_template"))
        self.constraints = ConstraintCompiler(self.tokenizer)
        self.scheduler = Scheduler(self.pool, self.tokenizer.token_bytes, self.tokenizer.eos_id, self.args.max_seq_len,
                                   max_batch=max_batch, reasoning_tags=self.reasoning_tags,
                                   reasoning_close_ids=self.tokenizer.encode(self.reasoning_tags.close, add_bos=False),
                                   make_matcher=self.constraints.matcher)
        self.loop = StepLoop(self.scheduler, ModelRunner(self.model, self.pool))
        COMPUTE.attach(self.loop)
        self.deterministic = False  # set by load_model: every request batch-invariant
        self.info = self._describe(gguf)

    def _kv_pool(self, kv_cache_mb: float | None) -> BlockPool:
        """A pool of KV blocks within the budget, but always room for one full-context sequence."""
        a = self.args
        bytes_per_token = 2 * a.n_layers * a.n_kv_heads * a.head_dim * torch.finfo(self.dtype).bits // 8
        budget = (kv_cache_mb if kv_cache_mb is not None else DEFAULT_KV_CACHE_MB) * 2**20
        blocks = max(int(budget // (bytes_per_token * BLOCK_SIZE)), -(-a.max_seq_len // BLOCK_SIZE) + 2)
        return COMPUTE.call(BlockPool, a.n_layers, blocks, BLOCK_SIZE, a.n_kv_heads, a.head_dim, self.dtype, self.device)

    def submit(self, prompt: str | list[int], params: SamplingParams | None = None) -> RequestHandle:
        """Queue one prompt (text, BOS added per the tokenizer, or token ids); stream or wait on the handle."""
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        return self._submit(ids, params or SamplingParams())

    def _submit(self, ids: list[int], params: SamplingParams) -> RequestHandle:
        # checked here: a bad token id would otherwise fail the whole batch it joins
        check_prompt(ids, self.args.max_seq_len, self.args.vocab_size)
        if self.deterministic and not params.deterministic:
            params = replace(params, deterministic=True)
        params.validate(self.args.vocab_size)
        if params.constraint is not None:
            self.constraints.matcher(params.constraint)  # a bad grammar fails here, in the caller's thread
        if params.num_beams > 1:
            raise ParamError("num_beams > 1 is not served by the scheduler; use Engine.generate", "num_beams")
        return self.loop.submit(ids, params, self.starts_in_reasoning(ids))

    def starts_in_reasoning(self, ids: list[int]) -> bool:
        """Whether a generation after these prompt ids begins inside a reasoning block (R1-style templates)."""
        return self.reasoning_tags.open_at_end(self.tokenizer.decode(ids[-64:]))

    def stats(self) -> dict:
        """Scheduler queue and KV pool occupancy."""
        return self.loop.stats()

    def close(self) -> None:
        """Stop the scheduler thread; wait for a weight cache entry this load is still writing."""
        self.loop.close()
        if self.weight_cache is not None:
            self.weight_cache.wait()

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.chat_template.render(messages, add_generation_prompt)

    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """float32 logits (len(token_ids), vocab) of the whole sequence read at once (a prompt may fill the context)."""
        check_prompt(token_ids, self.args.max_seq_len, self.args.vocab_size, room=0)
        try:
            return COMPUTE.call(score_tokens, self.model, self.pool, list(token_ids)).cpu()
        except PoolExhausted as exc:
            raise RuntimeError(f"the KV pool is busy with running requests ({exc}); retry when they finish") from exc

    def perplexity(self, text: str, ctx: int = 512, progress=None) -> Perplexity:
        """Perplexity of `text` in windows of `ctx` tokens, the `llama-perplexity` way (see perplexity.py)."""
        if not 4 <= ctx <= self.args.max_seq_len:
            raise ValueError(f"ctx must be between 4 and the model's context ({self.args.max_seq_len}), got {ctx}")
        bos = self.tokenizer.bos_id if self.tokenizer.add_bos else None
        return perplexity(self.logits, self.tokenizer.encode(text), ctx, bos, progress)

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
        for ids in encoded:
            check_prompt(ids, self.args.max_seq_len, self.args.vocab_size)
        handles = {i: self._submit(ids, p) for i, (ids, p) in enumerate(zip(encoded, per_prompt))
                   if p.num_beams == 1}  # all in the scheduler at once: one continuous batch
        try:
            results = []
            for i, (ids, p) in enumerate(zip(encoded, per_prompt)):
                if i in handles:
                    results += [replace(c, prompt_index=i) for c in handles[i].result()]
                else:  # beams share blocks of the pool; beam search runs between scheduler steps
                    results += COMPUTE.call(beam_search, self.model, self.pool, self.tokenizer, ids, p, i)
            return results
        finally:
            for handle in handles.values():
                handle.cancel()  # a no-op for finished ones; frees the rest if we were interrupted

    def _describe(self, gguf: GGUFFile) -> dict:
        return {**describe_gguf(gguf), "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "weights": self.weights, "kernels": _kernels_of(self.model),
                "resident_mb": round(resident_bytes(self.model) / 2**20, 1),
                "kv_cache_mb": round((self.pool.k.nbytes + self.pool.v.nbytes) / 2**20, 1),
                "kv_block_size": self.pool.block_size}


def _kernels_of(model) -> str | None:
    """Which kernels the model's packed layers run on: "native", "torch", "native+torch" (some shapes do not
    fit the native tiles), or None (no packed layers)."""
    layouts = {m.layout for m in model.modules() if isinstance(m, PackedLinear)}
    return "+".join(name for layout, name in (("tiles", "native"), ("torch", "torch")) if layout in layouts) or None


def model_info(path: str | Path | None = None, check_tensors: bool = False) -> dict:
    """What a GGUF holds (architecture, size, tensor types, context, vocab), without loading weights;
    ModelFileError when its metadata, tensor directory or chat template is unsound. `check_tensors`:
    also read every weight for NaN or infinity (as llama.cpp's --check-tensors)."""
    return describe_gguf(GGUFFile(path if path is not None else default_model_path()), tensors=check_tensors)


def load_model(path: str | Path | None = None, device: str = "auto", dtype: str | torch.dtype | None = None,
               llama_cpp_numerics: bool | None = None, weights: str | None = None,
               kv_cache_mb: float | None = None, max_batch: int = 64, deterministic: bool = False,
               weight_cache: str | Path | None = None, kernels: str = "auto") -> Engine:
    """Load a LLaMA-family GGUF (None: the default SmolLM2-135M-Instruct shipped with the package).

    dtype (default: bfloat16 on GPUs and on CPUs with fast bf16, else float32).
    weights: "packed" keeps 4/8-bit weights packed for PyTorch's weight-only kernels (default
    for bfloat16 on CPU); "dense" dequantizes them into `dtype` (the reference path).
    `llama_cpp_numerics` (default: on for float32) rounds activations as llama.cpp's CPU
    matmuls do, so greedy outputs match llama.cpp's token for token.
    kv_cache_mb: the paged KV pool's budget (default 2048, at least one full context).
    deterministic: every request batch-invariant (as SamplingParams.deterministic): the same tokens
    alone or in any batch, at some speed (README, "Batch-invariant mode").
    weight_cache: a folder where packed weights are kept (weight_cache.py): a second load of the same
    file maps them instead of packing (None: pack at every load).
    kernels: packed layers on "native" (int8 activations x int4/int8 weights on AVX-512 VNNI, as
    llama.cpp computes them), "torch" (PyTorch's bf16 kernels) or "auto" (native where the CPU has it).
    """
    check_kernels(kernels)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    gguf = GGUFFile(path if path is not None else default_model_path())
    if llama_cpp_numerics is None:
        llama_cpp_numerics = dtype == torch.float32
    if weights is None:
        weights = "packed" if device.type == "cpu" and dtype == torch.bfloat16 and not llama_cpp_numerics else "dense"
    engine = Engine(gguf, device, dtype, llama_cpp_numerics, weights, kv_cache_mb, max_batch,
                    WeightCache(weight_cache) if weight_cache is not None else None, kernels)
    engine.deterministic = deterministic
    return engine
