"""The int4 kernel's per-group bf16 scale and zero, straight from GGUF Q4_0 / Q4_1 / Q4_K blocks, in numpy.

`_weight_int4pack_mm_for_cpu` computes w = (q - 8) * scale + zero with one (scale, zero) pair per group of
32 values and output row, laid out (groups, rows, 2). These are the float32 formulas of ggml-common.h,
performed in the same order as quant_linear's torch reference, then rounded to bf16 as torch rounds.
"""
from __future__ import annotations

import numpy as np

from .int4_pack import CHUNK_BYTES, Q4_FORMATS


def int4_scales(rows: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 scale and zero of each group of 32, (n_rows, groups), such that w = (q - 8) * scale + zero;
    the same float32 operations as quant_linear's reference (ggml-common.h block formulas)."""
    fmt = Q4_FORMATS[kind]
    blocks = rows.reshape(rows.shape[0], -1, fmt.block_bytes)  # (rows, blocks, bytes)
    d = f16_field(blocks, 0)
    if kind == "Q4_0":
        return d, np.zeros_like(d)  # w = d * (q - 8)
    if kind == "Q4_1":
        return d, f16_field(blocks, 2) + np.float32(8) * d  # w = d * q + m
    sc, mn = k_scale_min(blocks[..., 4:16])  # Q4_K: w = d * sc * q - dmin * m per sub-block
    dl = d[..., None] * sc.astype(np.float32)
    ml = f16_field(blocks, 2)[..., None] * mn.astype(np.float32)
    return dl.reshape(rows.shape[0], -1), (np.float32(8) * dl - ml).reshape(rows.shape[0], -1)


def f16_field(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The little-endian fp16 at (even) `offset` of every block, as float32: (rows, blocks)."""
    return blocks.view(np.uint16)[..., offset // 2].view(np.float16).astype(np.float32)


def k_scale_min(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and mins of Q4_K/Q5_K sub-blocks from their 12 bytes: (..., 8) uint8 each."""
    d, m, md = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _k_pairs(blocks: np.ndarray) -> np.ndarray:
    """Q4_K: bf16 (scale, zero) pairs as uint32, (8 sub-blocks, rows, blocks): k_scale_min and int4_scales
    on whole uint32 words, one sub-block at a time, so every numpy call runs over a long contiguous array."""
    words = blocks.view(np.uint32)  # (rows, blocks, 36): words 1-3 hold the 12 bytes of 6-bit scales and mins
    low, mins, high = (np.ascontiguousarray(words[..., i]) for i in (1, 2, 3))
    d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)
    pairs = np.empty((8, *d.shape), np.uint32)
    for j in range(8):
        shift = np.uint32(8 * (j % 4))
        if j < 4:
            sc, mn = (low >> shift) & 0x3F, (mins >> shift) & 0x3F
        else:
            sc = ((high >> shift) & 0x0F) | ((low >> (shift + 2)) & 0x30)
            mn = ((high >> (shift + 4)) & 0x0F) | ((mins >> (shift + 2)) & 0x30)
        dl = d * sc.astype(np.float32)
        zero = np.float32(8) * dl - dmin * mn.astype(np.float32)
        pairs[j] = bf16_bits(dl) | (bf16_bits(zero) << 16)
    return pairs


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint32), rounded to nearest even as torch rounds. A NaN whose
    payload lies only in the low 16 bits would come out as inf (torch keeps it a NaN): scales are never NaN
    in a usable file, and skipping the check saves a pass over every scale."""
    u = x.view(np.uint32)
    return (u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16


def scales_and_zeros_into(rows: np.ndarray, kind: str, out: np.ndarray) -> None:
    """The kernel's (groups, rows) pairs of bf16 scale and zero, written into `out` viewed as uint32."""
    fmt = Q4_FORMATS[kind]
    step = max(1, CHUNK_BYTES // rows.shape[1])
    for first in range(0, rows.shape[0], step):
        chunk = rows[first:first + step]
        blocks = chunk.reshape(chunk.shape[0], -1, fmt.block_bytes)
        if kind == "Q4_K":
            pairs = _k_pairs(blocks)  # (sub-block, rows, blocks)
            out.reshape(-1, 8, out.shape[1])[:, :, first:first + step] = pairs.transpose(2, 0, 1)
            continue
        d = f16_field(blocks, 0)
        pairs = bf16_bits(d) if kind == "Q4_0" else bf16_bits(d) | (bf16_bits(f16_field(blocks, 2) + np.float32(8) * d) << 16)
        out[:, first:first + step] = pairs.T  # Q4_0's zero is 0; Q4_1's is m + 8d; the scale in the low half
