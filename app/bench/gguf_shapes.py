"""Random-weight GGUF files of a real model's shape, for load and speed benchmarks.

Speed does not depend on the weights' values, so the blocks are random bytes with small finite
fp16 scales, written straight to the file (gguf's GGUFWriter writes only the header); types follow
llama.cpp's recipes (llama_tensor_get_type): Q4_0 keeps a Q6_K output head; Q4_K_M is Q4_K with Q6_K
in the output head and in attn_v / ffn_down of the layers its use_more_bits() picks.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Shape:
    dim: int
    n_layers: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    context: int


SHAPES = {"llama2-7b": Shape(dim=4096, n_layers=32, hidden_dim=11008, n_heads=32, n_kv_heads=32,
                             vocab_size=32000, context=4096),
          "tiny": Shape(dim=256, n_layers=2, hidden_dim=512, n_heads=4, n_kv_heads=2, vocab_size=1000, context=256)}
RECIPES = ("Q4_0", "Q4_K_M")
# ggml type: (values per block, bytes per block, offsets of fp16 scale fields, typical |q * sub-scale|)
BLOCKS = {"Q4_0": (32, 18, (0,), 4.6), "Q4_K": (256, 144, (0, 2), 217.0), "Q6_K": (256, 210, (208,), 1330.0)}
FILE_TYPES = {"Q4_0": 2, "Q4_K_M": 15}  # llama_ftype
WEIGHT_STD = 0.02
SPM_UNK, SPM_CONTROL, SPM_BYTE, SPM_NORMAL = 2, 3, 6, 1  # llama.cpp token types


def tensor_types(shape: Shape, recipe: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape outermost first, ggml type) of every tensor, in the order llama.cpp's converter writes."""
    base = "Q4_0" if recipe == "Q4_0" else "Q4_K"
    kv = shape.dim // shape.n_heads * shape.n_kv_heads
    tensors = [("token_embd.weight", (shape.vocab_size, shape.dim), base)]
    for i in range(shape.n_layers):
        more = recipe == "Q4_K_M" and _use_more_bits(i, shape.n_layers)
        tensors += [(f"blk.{i}.attn_norm.weight", (shape.dim,), "F32"),
                    (f"blk.{i}.attn_q.weight", (shape.dim, shape.dim), base),
                    (f"blk.{i}.attn_k.weight", (kv, shape.dim), base),
                    (f"blk.{i}.attn_v.weight", (kv, shape.dim), "Q6_K" if more else base),
                    (f"blk.{i}.attn_output.weight", (shape.dim, shape.dim), base),
                    (f"blk.{i}.ffn_norm.weight", (shape.dim,), "F32"),
                    (f"blk.{i}.ffn_gate.weight", (shape.hidden_dim, shape.dim), base),
                    (f"blk.{i}.ffn_up.weight", (shape.hidden_dim, shape.dim), base),
                    (f"blk.{i}.ffn_down.weight", (shape.dim, shape.hidden_dim), "Q6_K" if more else base)]
    return tensors + [("output_norm.weight", (shape.dim,), "F32"), ("output.weight", (shape.vocab_size, shape.dim), "Q6_K")]


def _use_more_bits(layer: int, n_layers: int) -> bool:
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def _nbytes(dims: tuple[int, ...], kind: str) -> int:
    if kind == "F32":
        return 4 * int(np.prod(dims))
    values, block_bytes = BLOCKS[kind][:2]
    return int(np.prod(dims)) // values * block_bytes


def shaped_gguf(name: str, recipe: str, work_dir: Path, say: Callable[[str], None] = lambda _: None) -> Path:
    """The random-weight GGUF of SHAPES[name] in `recipe`, written into work_dir once and reused after."""
    shape, tensors = SHAPES[name], tensor_types(SHAPES[name], recipe)
    spec = json.dumps({"shape": asdict(shape), "recipe": recipe, "tensors": tensors, "format": 1}, sort_keys=True)
    path = Path(work_dir) / f"{name}-{recipe}-random-{hashlib.sha256(spec.encode()).hexdigest()[:12]}.gguf"
    if path.is_file():
        return path  # written whole before: the name is only given once the file is complete
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    need = sum(_nbytes(dims, kind) for _, dims, kind in tensors) + (64 << 20)
    free = shutil.disk_usage(work_dir).free
    if free < need:
        raise ValueError(f"{work_dir} has {free / 2**30:.1f} GiB free; the {name} {recipe} file needs "
                            f"{need / 2**30:.1f} GiB: free space or pass --work-dir on a bigger disk")
    say(f"writing {path} ({need / 2**30:.1f} GiB, random weights)")
    partial = path.with_suffix(".partial")
    _write(partial, shape, recipe, tensors)
    os.replace(partial, path)
    return path


def _write(path: Path, shape: Shape, recipe: str, tensors: list) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    _metadata(writer, shape, recipe)
    for name, dims, kind in tensors:
        writer.add_tensor_info(name, dims, np.float32, _nbytes(dims, kind), raw_dtype=gguf.GGMLQuantizationType[kind])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    alignment = writer.data_alignment
    writer.close()
    rng = np.random.default_rng(0)
    with path.open("ab") as f:
        f.write(b"\0" * (-f.tell() % alignment))
        for _, dims, kind in tensors:
            _write_tensor(f, dims, kind, rng)
            f.write(b"\0" * (-f.tell() % alignment))


def _write_tensor(f, dims: tuple[int, ...], kind: str, rng: np.random.Generator) -> None:
    if kind == "F32":
        np.ones(dims, np.float32).tofile(f)  # norm weights
        return
    values, block_bytes, scale_fields, magnitude = BLOCKS[kind]
    rows_per_chunk = max(1, (64 << 20) // (dims[1] // values * block_bytes))
    for first in range(0, dims[0], rows_per_chunk):
        n_blocks = min(rows_per_chunk, dims[0] - first) * dims[1] // values
        blocks = rng.integers(0, 256, (n_blocks, block_bytes), dtype=np.uint8)
        scale = (WEIGHT_STD / magnitude * (0.5 + rng.random(n_blocks, np.float32))).astype(np.float16)
        for offset in scale_fields:
            blocks[:, offset:offset + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
        blocks.tofile(f)


def _metadata(writer, shape: Shape, recipe: str) -> None:
    writer.add_name(f"random {recipe}")
    writer.add_file_type(FILE_TYPES[recipe])
    write_llama_header(writer, shape, synthetic_vocab(shape.vocab_size))


def write_llama_header(writer, shape, vocab: tuple[list[str], list[float], list[int]]) -> None:
    """A LLaMA-family file's hyperparameters (from `shape`: context, dim, n_layers, hidden_dim, n_heads,
    n_kv_heads) and its SentencePiece vocabulary (<unk> 0, <s> 1, </s> 2); the tests' tiny files use it too."""
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.dim)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.hidden_dim)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(shape.dim // shape.n_heads)
    pieces, scores, types = vocab
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(True)


def synthetic_vocab(size: int) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary of `size`: <unk> <s> </s>, 256 byte pieces, then characters and
    every letter pair and triple (with and without the word-start mark) until full; shorter pieces score higher."""
    import itertools
    import string

    chars = list(string.ascii_letters + string.digits + string.punctuation) + ["\u2581"]
    lower = string.ascii_lowercase
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + chars
    words = itertools.chain((f"\u2581{c}" for c in chars[:-1]), ("".join(p) for p in itertools.product(lower, repeat=2)),
                            (f"\u2581{a}{b}" for a, b in itertools.product(lower, repeat=2)),
                            ("".join(p) for p in itertools.product(lower, repeat=3)),
                            (f"\u2581{a}{b}{c}" for a, b, c in itertools.product(lower, repeat=3)))
    pieces += list(itertools.islice(words, size - len(pieces)))
    types = [SPM_UNK, SPM_CONTROL, SPM_CONTROL] + [SPM_BYTE] * 256 + [SPM_NORMAL] * (len(pieces) - 259)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces) - 259)]
    return pieces, scores, types
