"""Write tiny LLaMA-architecture GGUF files with random weights and a real SentencePiece vocab.

They cover what the default model does not: a SentencePiece (`llama`) vocabulary, an untied
output head and every GGML weight type. K-quants cannot be encoded by the gguf package, so
their blocks are random bytes with sane fp16 scales (only decoding is under test).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from app.bench.gguf_shapes import write_llama_header

CORPUS = """The quick brown fox jumps over the lazy dog. A farmer has 12 cows and sells 5 of them.
How many apples are left if Mary eats 3 of 10? Paris is the capital of France; Berlin of Germany.
def solution():
    total = 4 * 25 + 7
    return total
Numbers like 3.14159, 2,718 and -42 appear in word problems. Thought: I need to search Wikipedia.
Action: Search[Albert Einstein] Observation: Albert Einstein was a theoretical physicist.
Ünïcödé text, naïve café, 日本語のテキスト, emoji 🤖 and tabs\tand   runs of   spaces.
""" * 4


@dataclass(frozen=True)
class TinyShape:
    dim: int = 256
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    hidden_dim: int = 512
    context: int = 256


def train_sentencepiece(workdir: Path, vocab_size: int = 400) -> tuple[list[str], list[float], list[int]]:
    """Train a small BPE SentencePiece model with byte fallback; return pieces, scores, llama.cpp types."""
    import sentencepiece as spm

    corpus = workdir / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    prefix = workdir / "spm"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, minloglevel=2,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
    )
    sp = spm.SentencePieceProcessor(model_file=str(prefix) + ".model")
    pieces, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        pieces.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1)
    return pieces, scores, types


# typical |weight| = d * FACTOR for random K-quant bytes (sub-scale magnitude × quant magnitude)
_K_FACTORS = {"Q2_K": 12.0, "Q3_K": 32.0, "Q4_K": 256.0, "Q5_K": 512.0, "Q6_K": 1024.0}
_K_SCALE_FIELDS = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def _k_quant_bytes(rows: int, cols: int, qtype: str, magnitude: float, rng) -> np.ndarray:
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]]
    n_blocks = rows * cols // block_elems
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for offset in _K_SCALE_FIELDS[qtype]:
        d = (magnitude / _K_FACTORS[qtype] * (0.5 + rng.random(n_blocks))).astype(np.float16)
        raw[:, offset:offset + 2] = d.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(rows, -1)


def _encode_weight(values: np.ndarray, qtype: str, rng) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    kind = gguf.GGMLQuantizationType[qtype]
    if qtype == "F32":
        return values.astype(np.float32), kind
    if qtype in _K_FACTORS:
        return _k_quant_bytes(*values.shape, qtype, float(np.abs(values).mean()), rng), kind
    return gguf.quants.quantize(values.astype(np.float32), kind), kind


def write_tiny_llama(path: Path, vocab: tuple[list[str], list[float], list[int]], weight_type: str = "F32",
                     shape: TinyShape = TinyShape(), tied: bool = False, arch: str = "llama", seed: int = 0,
                     metadata: Callable[[gguf.GGUFWriter], None] | None = None,
                     rope_freqs: np.ndarray | None = None) -> Path:
    """A random-weight LLaMA-family GGUF with a SentencePiece vocab; 2-D weights stored as `weight_type`.

    `arch` "qwen2" adds Q/K/V biases, "qwen3" per-head Q/K norms (as those files have);
    `metadata` writes extra keys (rope scaling, a sliding window); `rope_freqs` adds LLaMA-3.1's
    per-frequency factors tensor.
    """
    rng = np.random.default_rng(seed)
    pieces, scores, types = vocab
    head_dim = shape.dim // shape.n_heads
    writer = gguf.GGUFWriter(str(path), arch)
    write_llama_header(writer, shape, vocab)
    if metadata is not None:
        metadata(writer)

    def weight(name, rows, cols, std):
        data, kind = _encode_weight(rng.standard_normal((rows, cols)).astype(np.float32) * std, weight_type, rng)
        writer.add_tensor(name, data, raw_dtype=kind)

    def norm(name, dim):
        writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(dim)).astype(np.float32))

    vocab_size, kv_dim = len(pieces), shape.n_kv_heads * head_dim
    weight("token_embd.weight", vocab_size, shape.dim, 1.0)
    for i in range(shape.n_layers):
        norm(f"blk.{i}.attn_norm.weight", shape.dim)
        weight(f"blk.{i}.attn_q.weight", shape.dim, shape.dim, 0.08)
        weight(f"blk.{i}.attn_k.weight", kv_dim, shape.dim, 0.08)
        weight(f"blk.{i}.attn_v.weight", kv_dim, shape.dim, 0.08)
        weight(f"blk.{i}.attn_output.weight", shape.dim, shape.dim, 0.05)
        if arch == "qwen2":
            for name, width in (("attn_q", shape.dim), ("attn_k", kv_dim), ("attn_v", kv_dim)):
                writer.add_tensor(f"blk.{i}.{name}.bias", (0.5 * rng.standard_normal(width)).astype(np.float32))
        if arch == "qwen3":
            norm(f"blk.{i}.attn_q_norm.weight", head_dim)
            norm(f"blk.{i}.attn_k_norm.weight", head_dim)
        norm(f"blk.{i}.ffn_norm.weight", shape.dim)
        weight(f"blk.{i}.ffn_gate.weight", shape.hidden_dim, shape.dim, 0.08)
        weight(f"blk.{i}.ffn_up.weight", shape.hidden_dim, shape.dim, 0.08)
        weight(f"blk.{i}.ffn_down.weight", shape.dim, shape.hidden_dim, 0.05)
    norm("output_norm.weight", shape.dim)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    if not tied:
        weight("output.weight", vocab_size, shape.dim, 1.0)  # well-separated logits: few near-ties
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_bpe_vocab(path: Path, tokens: list[str], token_types: list[int], merges: list[str], pre: str | None,
                    add_bos: bool | None = None, shape: TinyShape = TinyShape()) -> Path:
    """A tensor-less LLaMA GGUF with a `gpt2` BPE vocabulary: enough for tokenizers and vocab-only loads."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.dim)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.hidden_dim)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
