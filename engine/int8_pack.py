"""GGUF rows requantized to int8 with one scale per row, in vectorized numpy, a few rows at a time.

The reference is `quant_linear.int8_linear(dequant.dequantize(...))` (torch, whole tensor in float32);
this performs the same float32 operations in the same order, per row chunk, so codes and scales are
bit-identical. numpy, not torch, so it can run on loader threads without starting OpenMP teams there
(see compute.py). Types decoded here: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K (ggml-common.h).
"""
from __future__ import annotations

import numpy as np

from .int4_scales import bf16_bits, f16_field, int4_scales, k_scale_min

CHUNK_VALUES = 1 << 18  # float32 values decoded per step: 1 MiB, few numpy calls per value
_TINY = np.float32(np.finfo(np.float32).tiny)
_U64 = np.uint64
_LOW_NIBBLES, _LOW_2_BITS = _U64(0x0F0F0F0F0F0F0F0F), _U64(0x0303030303030303)
_QUARTER_SHIFTS = np.array([0, 2, 4, 6], _U64).reshape(1, 1, 1, 4, 1)


def _q8_0(blocks: np.ndarray) -> np.ndarray:
    return blocks[..., 2:].view(np.int8).astype(np.float32) * f16_field(blocks, 0)[..., None]


def _q4_values(blocks: np.ndarray, run: int) -> np.ndarray:
    """4-bit codes in value order: each run of bytes gives its low nibbles, then its high nibbles."""
    qs = blocks.reshape(*blocks.shape[:-1], -1, 1, run)
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-2).reshape(*blocks.shape[:-1], -1)


def _q4(kind: str, code_at: int, run: int):
    def decode(blocks: np.ndarray) -> np.ndarray:
        n, nb = blocks.shape[:2]
        scale, zero = int4_scales(blocks.reshape(n, -1), kind)  # per group of 32: w = (q - 8) * scale + zero
        q = _q4_values(np.ascontiguousarray(blocks[..., code_at:]), run).reshape(n, -1, 32)
        if kind == "Q4_0":  # as dequant._q4_0: d * (q - 8)
            return (q.astype(np.int8) - np.int8(8)).astype(np.float32) * scale.reshape(n, -1, 1)
        if kind == "Q4_1":  # as dequant._q4_1: d * q + m
            return q.astype(np.float32) * scale.reshape(n, -1, 1) + f16_field(blocks, 2)[..., None]
        dl, ml = _k_scales(blocks)  # Q4_K, as dequant._q4_k: d * sc * q - dmin * m
        return dl * q.reshape(n, nb, 8, 32).astype(np.float32) - ml
    return decode


def _k_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sc, mn = k_scale_min(blocks[..., 4:16])
    dl = f16_field(blocks, 0)[..., None] * sc.astype(np.float32)
    return dl[..., None], (f16_field(blocks, 2)[..., None] * mn.astype(np.float32))[..., None]  # (n, blocks, 8, 1)


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    """As dequant._q6_k: the 4 low bits of 256 values in 128 bytes, their 2 high bits in 64 more, worked on
    as uint64 lanes (eight bytes a step) rather than bytes."""
    n, nb = blocks.shape[:2]
    ql = np.ascontiguousarray(blocks[..., :128]).view(_U64).reshape(n, nb, 2, 2, 4)  # (half, 32-byte run, words)
    qh = np.ascontiguousarray(blocks[..., 128:192]).view(_U64).reshape(n, nb, 2, 1, 4)
    q = np.empty((n, nb, 2, 4, 4), _U64)  # (half, quarter, words): 32 values a quarter
    np.bitwise_and(ql, _LOW_NIBBLES, out=q[:, :, :, :2])
    np.right_shift(ql, _U64(4), out=q[:, :, :, 2:])
    np.bitwise_and(q[:, :, :, 2:], _LOW_NIBBLES, out=q[:, :, :, 2:])
    q |= ((qh >> _QUARTER_SHIFTS) & _LOW_2_BITS) << _U64(4)  # quarter c takes bits 2c, 2c + 1 of qh
    values = (q.view(np.int8) - np.int8(32)).astype(np.float32).reshape(n, -1)
    dl = f16_field(blocks, 208)[..., None] * blocks[..., 192:208].view(np.int8).astype(np.float32)  # (n, nb, 16)
    return np.multiply(values, np.repeat(dl.reshape(n, -1), 16, axis=-1), out=values)  # repeat: long loops


DECODERS = {
    "F32": (1, 4, lambda b: b.view(np.float32).copy()),
    "F16": (1, 2, lambda b: b.view(np.float16).astype(np.float32)),
    "BF16": (1, 2, lambda b: (b.view(np.uint16).astype(np.uint32) << 16).view(np.float32)),
    "Q8_0": (32, 34, _q8_0),
    "Q4_0": (32, 18, _q4("Q4_0", 2, 16)),
    "Q4_1": (32, 20, _q4("Q4_1", 4, 16)),
    "Q4_K": (256, 144, _q4("Q4_K", 16, 32)),
    "Q6_K": (256, 210, _q6_k),
}


def decode_rows(rows: np.ndarray, kind: str) -> np.ndarray:
    """GGUF rows (n, row bytes) uint8 -> float32 (n, in_features), bit-exact with dequant.dequantize."""
    block_values, block_bytes, decode = DECODERS[kind]
    return decode(rows.reshape(rows.shape[0], -1, block_bytes)).reshape(rows.shape[0], -1)


def int8_rows_into(rows: np.ndarray, kind: str, codes: np.ndarray, scales: np.ndarray) -> None:
    """Requantize GGUF rows to int8: codes (n, K padded to 16) int8, scales (n,) bf16 bits (uint16),
    with one scale max|w_row| / 127 per row, as quant_linear.int8_linear does."""
    step = max(1, CHUNK_VALUES // codes.shape[1])
    for first in range(0, rows.shape[0], step):
        w = decode_rows(rows[first:first + step], kind)
        amax = np.maximum(w.max(axis=1), -w.min(axis=1)) / np.float32(127)  # max|w| without an |w| copy
        bits = bf16_bits(np.maximum(amax, _TINY))  # rounded to bf16 first: codes are chosen against the kernel's scale
        scales[first:first + step] = bits
        np.divide(w, (bits << 16).view(np.float32)[:, None], out=w)
        np.rint(w, out=w)
        np.clip(w, -127, 127, out=w)
        out = codes[first:first + step]
        out[:, :w.shape[1]] = w
        out[:, w.shape[1]:] = 0  # zero columns meet zero-padded inputs
