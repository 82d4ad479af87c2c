"""GGUF Q4_0 / Q4_1 / Q4_K blocks packed straight into PyTorch's CPU int4 layout, in vectorized numpy.

The layout is what `torch.ops.aten._convert_weight_to_int4pack_for_cpu` writes (`weight_to_int4pack_kernel`
in aten/src/ATen/native/cpu/int4mm_kernel.cpp): output rows go in blocks of 64 (AVX-512) or 32 (AVX2 and
the plain build); per block and input column k there are block/2 bytes, byte j holding one row's code in
its low nibble and another's in its high nibble. A full block pairs row j with row j + block/2 on the
vector builds, adjacent rows 2j and 2j + 1 on the plain one; a shorter last block (16, 32 or 48 rows)
always pairs adjacent rows. Which one this PyTorch uses is checked once against the op itself
(`cpu_int4_layout`); the op on int32 codes (`quant_linear.int4_linear`) stays the reference.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # GGUF bytes per step: fewer numpy calls per byte; the scratch stays in L2 + L3

_U64 = np.uint64
_LOW_NIBBLES = _U64(0x0F0F0F0F0F0F0F0F)
# An 8x8 byte transpose as three delta swaps (Hacker's Delight 7-3): 4-byte, 2-byte, then 1-byte blocks.
# Stage s pairs slab i with i + 4 / 2**s (i's bit 2 - s clear).
_TRANSPOSE_STAGES = ((_U64(32), _U64(0x00000000FFFFFFFF)), (_U64(16), _U64(0x0000FFFF0000FFFF)),
                     (_U64(8), _U64(0x00FF00FF00FF00FF)))


@dataclass(frozen=True)
class Q4Format:
    """Where a Q4 block keeps its 4-bit codes: `run` bytes give `run` codes in their low nibbles, then
    the next `run` codes in their high nibbles (ggml-common.h)."""
    block_values: int
    block_bytes: int
    codes_at: int
    run: int

    @property
    def code_bytes(self) -> int:
        return self.block_values // 2


Q4_FORMATS = {"Q4_0": Q4Format(32, 18, 2, 16), "Q4_1": Q4Format(32, 20, 4, 16), "Q4_K": Q4Format(256, 144, 16, 32)}


@dataclass(frozen=True)
class Int4Layout:
    """Rows per full block, and whether a full block pairs row j with j + block/2 (else 2j with 2j + 1)."""
    block_rows: int
    halves: bool

    def blocks(self, n_rows: int) -> list[tuple[int, int, int, bool]]:
        """(first row, number of blocks, rows per block, halves) covering n_rows (a multiple of 16)."""
        full, tail = divmod(n_rows, self.block_rows)
        spans = [(0, full, self.block_rows, self.halves)] if full else []
        return spans + ([(full * self.block_rows, 1, tail, False)] if tail else [])


CANDIDATE_LAYOUTS = (Int4Layout(64, True), Int4Layout(32, True), Int4Layout(32, False))


def pack_int4(rows: np.ndarray, fmt: Q4Format, layout: Int4Layout, out: np.ndarray) -> None:
    """Q4 rows (n_rows, row bytes) uint8 -> out (n_rows, in_features / 2) uint8 in the CPU int4 layout."""
    for start, n_blocks, block_rows, halves in layout.blocks(rows.shape[0]):
        step = max(1, CHUNK_BYTES // (block_rows * rows.shape[1]))
        scratch = _Scratch(min(step, n_blocks), block_rows, rows.shape[1])
        for first in range(0, n_blocks, step):
            n = min(step, n_blocks - first)
            lo, hi = start + first * block_rows, start + (first + n) * block_rows
            _pack_blocks(rows[lo:hi], fmt, block_rows, halves, scratch, out[lo:hi])


class _Scratch:
    """Reused buffers for one chunk of n_blocks row blocks; rows are read as whole uint64 words."""

    def __init__(self, n_blocks: int, block_rows: int, row_bytes: int):
        groups = block_rows // 16  # a group: eight row pairs, one byte each in a uint64
        self.words = -(-row_bytes // 8)
        self.rows: np.ndarray | None = None  # (low/high row, r, block, group, bytes): only for unaligned rows
        self.pairs = np.empty((8, 2, n_blocks, groups, self.words), _U64)  # (r, run half, block, group, words)
        self.tmp = np.empty((8, n_blocks, groups, self.words), _U64)
        self.columns = np.empty((2, n_blocks, self.words, 8, groups), _U64)  # (run half, block, word, byte, group)


def _pack_blocks(rows: np.ndarray, fmt: Q4Format, block_rows: int, halves: bool, s: _Scratch, out: np.ndarray) -> None:
    n_blocks, groups = rows.shape[0] // block_rows, block_rows // 16
    low, high = _row_pairs(rows, block_rows, halves, s)  # (r, block, group, words): the rows whose codes share bytes
    pairs, tmp = s.pairs[:, :, :n_blocks], s.tmp[:, :n_blocks]
    _combine_nibbles(low, high, pairs, tmp)  # pairs[r] byte t: a row pair's two codes at byte position t of their rows
    _transpose_bytes8(pairs, s.tmp)  # pairs[t] byte r: the same, now the 8 pairs of a group side by side
    columns = s.columns[:, :n_blocks]
    np.copyto(columns, pairs.transpose(1, 2, 4, 0, 3))  # (half, block, word, t, group): one position's bytes together
    _select_codes(columns.reshape(2, n_blocks, -1, groups), fmt, rows.shape[1], out.view(_U64).reshape(n_blocks, -1, groups))


def _row_pairs(rows: np.ndarray, block_rows: int, halves: bool, s: _Scratch) -> tuple[np.ndarray, np.ndarray]:
    """Views (r, block, group, words) of the low and high rows of each pair: rows j and j + block/2, or 2j and 2j + 1."""
    n_blocks, groups, row_bytes = rows.shape[0] // block_rows, block_rows // 16, rows.shape[1]
    shape = (n_blocks, 2, groups, 8, -1) if halves else (n_blocks, groups, 8, 2, -1)
    order = (1, 3, 0, 2, 4) if halves else (3, 2, 0, 1, 4)
    if row_bytes % 8 == 0 and rows.strides[1] == 1 and rows.ctypes.data % 8 == 0:
        paired = rows.view(_U64).reshape(shape).transpose(order)  # read in place: no copy
    else:  # rows that are not whole aligned words: copy them into padded scratch first
        if s.rows is None:
            s.rows = np.empty((2, 8, s.pairs.shape[2], groups, s.words * 8), np.uint8)
        paired = s.rows[:, :, :n_blocks]
        np.copyto(paired[..., :row_bytes], rows.reshape(shape).transpose(order))
        paired = paired.view(_U64)
    return paired[0], paired[1]


def _combine_nibbles(low: np.ndarray, high: np.ndarray, pairs: np.ndarray, tmp: np.ndarray) -> None:
    """Bytes holding codes (c, c') of a low row and (d, d') of its high row -> (c | d << 4) and (c' | d' << 4):
    a delta swap of the low row's high nibbles with the high row's low nibbles."""
    first, second = pairs[:, 0], pairs[:, 1]
    np.right_shift(low, _U64(4), out=second)
    np.bitwise_xor(second, high, out=tmp)
    np.bitwise_and(tmp, _LOW_NIBBLES, out=tmp)
    np.bitwise_xor(high, tmp, out=second)
    np.left_shift(tmp, _U64(4), out=tmp)
    np.bitwise_xor(low, tmp, out=first)


def _transpose_bytes8(words: np.ndarray, tmp: np.ndarray) -> None:
    """In place along axis 0 (length 8): words[t] byte r <- words[r] byte t, for every other index.
    Each stage swaps between the two halves of every pair of axis-0 slabs in six calls."""
    for stage, (shift, mask) in enumerate(_TRANSPOSE_STAGES):
        split = words.reshape(2 ** stage, 2, -1, *words.shape[1:])  # (pairs of groups, x|y, group, ...)
        x, y = split[:, 0], split[:, 1]
        t = tmp.reshape(-1)[:x.size].reshape(x.shape)  # a contiguous scratch view of x's shape
        np.right_shift(x, shift, out=t)
        np.bitwise_xor(t, y, out=t)
        np.bitwise_and(t, mask, out=t)
        np.bitwise_xor(y, t, out=y)
        np.left_shift(t, shift, out=t)
        np.bitwise_xor(x, t, out=x)


def _select_codes(columns: np.ndarray, fmt: Q4Format, row_bytes: int, out: np.ndarray) -> None:
    """columns (half, block, byte position in a row, group words) -> out (block, k, group words):
    byte position p of a GGUF row holds the codes of two columns k; keep code bytes, drop scales."""
    n_gguf_blocks, runs = row_bytes // fmt.block_bytes, fmt.code_bytes // fmt.run
    src = columns[:, :, :n_gguf_blocks * fmt.block_bytes].reshape(2, -1, n_gguf_blocks, fmt.block_bytes, columns.shape[-1])
    src = src[:, :, :, fmt.codes_at:fmt.codes_at + fmt.code_bytes]
    src = src.reshape(2, -1, n_gguf_blocks, runs, fmt.run, columns.shape[-1]).transpose(1, 2, 3, 0, 4, 5)
    np.copyto(out.reshape(src.shape), src)  # k = block * values + run * 2 * run_len + half * run_len + i


@functools.cache
def cpu_int4_layout() -> Int4Layout | None:
    """The layout this PyTorch build's int4 packer writes, found by packing a probe both ways (None: unknown)."""
    rows = np.random.default_rng(0).integers(0, 256, (112, 2 * 18), dtype=np.uint8)  # Q4_0: 112 rows of 64 values
    qs = rows.reshape(112, 2, 18)[:, :, 2:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(112, 64)  # a block's low nibbles, then its high
    expected = torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.from_numpy(codes.astype(np.int32)), 2).numpy()
    for layout in CANDIDATE_LAYOUTS:
        packed = np.empty_like(expected)
        pack_int4(rows, Q4_FORMATS["Q4_0"], layout, packed)
        if np.array_equal(packed, expected):
            return layout
    log.warning("PyTorch's CPU int4 layout is none we know; packing through the slower reference op")
    return None


def pack_int4_tiles(rows: np.ndarray, fmt: Q4Format, out: np.ndarray) -> None:
    """Q4 rows (n_rows, row bytes) uint8, n_rows a multiple of 16 -> out (n_rows, in_features / 2) uint8 in
    the native kernel's tiles layout (kernels/cpu_matmul.c): per 16 rows and 8 inputs, 64 bytes, byte 4r + t
    holding row r's code of input t in its low nibble and of input t + 4 in its high nibble. The reference
    of the compiled packer (cpu_matmul.pack_q4_tiles), which loading uses."""
    n_rows, row_bytes = rows.shape
    in_features = row_bytes // fmt.block_bytes * fmt.block_values
    step = max(16, CHUNK_BYTES // row_bytes // 16 * 16)
    for first in range(0, n_rows, step):
        slab = rows[first:first + step]
        n = slab.shape[0]
        codes = _codes(slab, fmt)  # (n, in_features), one code a byte
        split = codes.reshape(n // 16, 16, in_features // 8, 2, 4)  # (tile, row, 8 inputs, low/high, 4)
        byte = np.left_shift(split[:, :, :, 1], 4)
        np.bitwise_or(byte, split[:, :, :, 0], out=byte)
        out[first:first + n].reshape(n // 16, in_features // 8, 16, 4)[...] = byte.transpose(0, 2, 1, 3)


def _codes(rows: np.ndarray, fmt: Q4Format) -> np.ndarray:
    """(n, in_features) uint8 codes 0..15 of Q4 rows, in input order."""
    n = rows.shape[0]
    held = rows.reshape(n, -1, fmt.block_bytes)[:, :, fmt.codes_at:fmt.codes_at + fmt.code_bytes]
    held = held.reshape(n, held.shape[1], -1, fmt.run)  # (n, blocks, runs, run): low nibbles, then high
    codes = np.empty((*held.shape[:3], 2, fmt.run), np.uint8)
    np.bitwise_and(held, 0x0F, out=codes[:, :, :, 0])
    np.right_shift(held, 4, out=codes[:, :, :, 1])
    return codes.reshape(n, -1)
