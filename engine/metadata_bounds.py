"""Sane bounds for the GGUF metadata values that size a tensor, an allocation or a division: one table.

A model file is untrusted input. A head count of 0 divides by zero, a context of 2^32 asks for
gigabytes of RoPE table and KV cache, 10^9 layers never finish building, a NaN rope base or a
negative epsilon loads and produces garbage. Every such value is checked here before it is used;
the bounds are a few times the largest LLaMA-family release, so no real file comes near them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .gguf_file import MAX_ARRAY_LEN, ModelFileError


@dataclass(frozen=True)
class Bound:
    kind: type  # int or float
    low: float
    high: float
    open_low: bool = False  # low itself is refused (0 < eps, 1 < rope base)


# `{arch}.` + key -> its bound
BOUNDS: dict[str, Bound] = {
    "embedding_length": Bound(int, 1, 1 << 16),  # 16,384 for LLaMA-3.1-405B
    "block_count": Bound(int, 1, 1024),  # 126 for LLaMA-3.1-405B
    "attention.head_count": Bound(int, 1, 1024),
    "attention.head_count_kv": Bound(int, 1, 1024),
    "attention.key_length": Bound(int, 2, 1024),  # RoPE rotates pairs: at least one
    "feed_forward_length": Bound(int, 1, 1 << 18),
    "vocab_size": Bound(int, 1, MAX_ARRAY_LEN),
    "context_length": Bound(int, 1, 1 << 20),  # Qwen2.5-1M's 1,010,000; sizes the RoPE table and KV pool
    "attention.layer_norm_rms_epsilon": Bound(float, 0.0, 0.1, open_low=True),
    "rope.freq_base": Bound(float, 1.0, 1e12, open_low=True),  # a log of it divides (YaRN)
    "rope.scaling.factor": Bound(float, 0.0, 1024.0, open_low=True),
    "rope.scaling.original_context_length": Bound(int, 1, 1 << 20),
    "rope.scaling.yarn_ext_factor": Bound(float, 0.0, 1024.0),
    "rope.scaling.yarn_attn_factor": Bound(float, 0.0, 1024.0, open_low=True),
    "rope.scaling.yarn_beta_fast": Bound(float, 0.0, 1024.0, open_low=True),
    "rope.scaling.yarn_beta_slow": Bound(float, 0.0, 1024.0, open_low=True),
    "attention.sliding_window": Bound(int, 0, 1 << 20),
}


def checked(path: Path, key: str, value, name: str):
    """`value` of metadata `key` (`name` is its BOUNDS entry) when it is a number within bounds; else ModelFileError."""
    bound = BOUNDS[name]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if bound.kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ModelFileError(f"{path}: metadata '{key}' must be an integer, not {_shown(value)}")
    if not is_number or not math.isfinite(value):
        raise ModelFileError(f"{path}: metadata '{key}' must be a finite number, not {_shown(value)}")
    too_low = value <= bound.low if bound.open_low else value < bound.low
    if too_low or value > bound.high:
        low = f"{'>' if bound.open_low else '>='} {_num(bound.low)}"
        raise ModelFileError(f"{path}: metadata '{key}' is {_num(value)}; it must be {low} and <= {_num(bound.high)} "
                             "(the file is corrupt or not a model the engine can run)")
    return bound.kind(value)


def check_heads(path: Path, arch: str, n_heads: int, n_kv_heads: int) -> None:
    if n_heads % n_kv_heads:
        raise ModelFileError(f"{path}: metadata '{arch}.attention.head_count' ({n_heads}) must be a multiple of "
                             f"'{arch}.attention.head_count_kv' ({n_kv_heads})")


MAX_ROPE_VALUES = 1 << 27  # context x head width: Qwen2.5-1M's 1,010,000 x 128; the table is half of it in (cos, sin) pairs


def check_rope_table(path: Path, arch: str, context: int, head_dim: int) -> None:
    """The RoPE table has a row per position: refuse one whose size no real model needs."""
    if context * head_dim > MAX_ROPE_VALUES:
        raise ModelFileError(f"{path}: '{arch}.context_length' {context:,} with heads {head_dim} wide needs a RoPE table "
                             f"of {context * head_dim:,} values (the engine allows {MAX_ROPE_VALUES:,})")


def check_vocab(path: Path, arch: str, vocab_size: int | None, tokens) -> int:
    """The model's vocabulary size (the file's `vocab_size`, else its token count); its embedding rows must
    cover every token the tokenizer can produce."""
    if not isinstance(tokens, list):
        raise ModelFileError(f"{path}: metadata 'tokenizer.ggml.tokens' must be a list of strings, not {_shown(tokens)}")
    n_tokens = checked(path, "tokenizer.ggml.tokens (its length)", len(tokens), "vocab_size")
    if vocab_size is None:
        return n_tokens
    if n_tokens > vocab_size:
        raise ModelFileError(f"{path}: the vocabulary has {n_tokens} tokens but '{arch}.vocab_size' is {vocab_size}; "
                             "the embedding would have no row for the last ones")
    return vocab_size


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _num(value) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"
