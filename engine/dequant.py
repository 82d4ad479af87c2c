"""Dequantize GGML tensor data to float32 in PyTorch (block layouts of ggml-common.h).

Every function performs the same float32 operations in the same order as the reference
decoder (`gguf.quants.dequantize`), so results are bit-exact, not merely close.
"""
from __future__ import annotations

import numpy as np
import torch

QK_K = 256  # super-block size of the K-quants

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    10: ("Q2_K", QK_K, 84),
    11: ("Q3_K", QK_K, 110),
    12: ("Q4_K", QK_K, 144),
    13: ("Q5_K", QK_K, 176),
    14: ("Q6_K", QK_K, 210),
    30: ("BF16", 1, 2),
}


class UnsupportedTensorType(ValueError):
    pass


def type_name(ggml_type: int) -> str:
    """The ggml name of a type id, e.g. 'Q4_K', also for types we cannot decode."""
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"ggml type {ggml_type}"


def dequantize(raw: np.ndarray | torch.Tensor, ggml_type: int, shape: tuple[int, ...], name: str = "tensor") -> torch.Tensor:
    """Decode raw GGML data into a float32 tensor of `shape` (outermost first)."""
    if ggml_type not in GGML_TYPES:
        raise UnsupportedTensorType(f"tensor '{name}' has type {type_name(ggml_type)}, which the engine cannot decode; "
                                    f"supported: {', '.join(t[0] for t in GGML_TYPES.values())}")
    type_label, block_elems, block_bytes = GGML_TYPES[ggml_type]
    data = _as_bytes(raw)
    n_elements = int(np.prod(shape))
    if n_elements % block_elems or data.numel() != n_elements // block_elems * block_bytes:
        raise ValueError(f"tensor '{name}': {data.numel()} bytes do not hold {n_elements} {type_label} values")
    blocks = data.view(-1, block_bytes)  # (n_blocks, block_bytes)
    return _DECODERS[type_label](blocks).reshape(shape)


def block_mins(raw, ggml_type: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The fp16 per-block minimum `m` of Q4_1/Q5_1 data as float32: (rows, cols / 32)."""
    label, _, block_bytes = GGML_TYPES[ggml_type]
    if label not in ("Q4_1", "Q5_1"):
        raise ValueError(f"{label} blocks have no minimum")
    blocks = _as_bytes(raw).view(-1, block_bytes)
    return _f16(blocks[:, 2:4]).reshape(shape[0], -1)


def _as_bytes(raw) -> torch.Tensor:
    if isinstance(raw, torch.Tensor):
        return raw.contiguous().view(torch.uint8).reshape(-1)
    arr = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    return torch.from_numpy(arr.copy())


def _f16(b: torch.Tensor) -> torch.Tensor:
    """Little-endian fp16 fields (n, 2 bytes) -> float32 (n, 1)."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor, group: int) -> torch.Tensor:
    """Low nibbles of each `group` bytes, then their high nibbles: (n, k*group) -> (n, 2*k*group)."""
    n = qs.shape[0]
    q = qs.reshape(n, -1, 1, group) >> torch.tensor([0, 4], dtype=torch.uint8).reshape(1, 1, 2, 1)
    return (q & 0x0F).reshape(n, -1)


def _bits(packed: torch.Tensor, shifts: list[int], mask: int, group: int) -> torch.Tensor:
    """Extract fields of width `mask` at each shift, grouped by `group` bytes: (n, -1, len(shifts), group)."""
    n = packed.shape[0]
    s = torch.tensor(shifts, dtype=torch.uint8).reshape(1, 1, -1, 1)
    return (packed.reshape(n, -1, 1, group) >> s) & mask


def _high_bits32(qh: torch.Tensor) -> torch.Tensor:
    """The 32 single high bits of Q5_0/Q5_1 from a little-endian uint32: (n, 4) -> (n, 32) uint8."""
    word = qh.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # (n, 1)
    return ((word >> torch.arange(32)) & 1).to(torch.uint8)


def _f32(blocks):
    return blocks.contiguous().view(torch.float32).reshape(-1)


def _f16_values(blocks):
    return blocks.contiguous().view(torch.float16).float().reshape(-1)


def _bf16(blocks):
    return (blocks.contiguous().view(torch.int16).to(torch.int32) << 16).view(torch.float32).reshape(-1)


def _q8_0(blocks):
    d = _f16(blocks[:, :2])
    x = blocks[:, 2:].contiguous().view(torch.int8).float()
    return x * d


def _q4_0(blocks):
    d = _f16(blocks[:, :2])
    q = _nibbles(blocks[:, 2:], 16).to(torch.int8) - 8
    return d * q.float()


def _q4_1(blocks):
    d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    q = _nibbles(blocks[:, 4:], 16).float()
    return (d * q) + m


def _q5_0(blocks):
    d = _f16(blocks[:, :2])
    q = (_nibbles(blocks[:, 6:], 16) | (_high_bits32(blocks[:, 2:6]) << 4)).to(torch.int8) - 16
    return d * q.float()


def _q5_1(blocks):
    d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    q = (_nibbles(blocks[:, 8:], 16) | (_high_bits32(blocks[:, 4:8]) << 4)).float()
    return (d * q) + m


def _q2_k(blocks):
    n = blocks.shape[0]
    scales, qs = blocks[:, :16], blocks[:, 16:80]
    d, dmin = _f16(blocks[:, 80:82]), _f16(blocks[:, 82:84])
    dl = (d * (scales & 0xF).float()).reshape(n, 16, 1)
    ml = (dmin * (scales >> 4).float()).reshape(n, 16, 1)
    q = _bits(qs, [0, 2, 4, 6], 3, 32).reshape(n, 16, 16).float()
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k(blocks):
    n = blocks.shape[0]
    hmask, qs, scales = blocks[:, :32], blocks[:, 32:96], blocks[:, 96:108]
    d = _f16(blocks[:, 108:110])
    low = _bits(scales[:, :8], [0, 4], 0x0F, 8).reshape(n, 16)
    high = _bits(scales[:, 8:], [0, 2, 4, 6], 0x03, 4).reshape(n, 16)
    sc = ((low | (high << 4)).to(torch.int8) - 32).float()
    dl = (d * sc).reshape(n, 16, 1)
    ql = _bits(qs, [0, 2, 4, 6], 3, 32).reshape(n, 16, 16)
    qh = _bits(hmask, list(range(8)), 1, 32).reshape(n, 16, 16) ^ 1  # a set bit means no -4 offset
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).float()
    return (dl * q).reshape(n, QK_K)


def _k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack the eight 6-bit scales and mins of Q4_K/Q5_K from 12 bytes."""
    n = scales.shape[0]
    s = scales.reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _k_scales(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: per 32-value group, the scale d * sc and the offset dmin * m: (n, 8, 1) each."""
    n = blocks.shape[0]
    d, dmin = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    sc, mn = _k_scale_min(blocks[:, 4:16])
    return (d * sc.float()).reshape(n, 8, 1), (dmin * mn.float()).reshape(n, 8, 1)


def _q4_k(blocks):
    n = blocks.shape[0]
    dl, ml = _k_scales(blocks)
    q = _bits(blocks[:, 16:], [0, 4], 0x0F, 32).reshape(n, 8, 32).float()
    return (dl * q - ml).reshape(n, QK_K)


def _q5_k(blocks):
    n = blocks.shape[0]
    dl, ml = _k_scales(blocks)
    ql = _bits(blocks[:, 48:], [0, 4], 0x0F, 32).reshape(n, 8, 32)
    qh = _bits(blocks[:, 16:48], list(range(8)), 1, 32).reshape(n, 8, 32)
    q = (ql | (qh << 4)).float()
    return (dl * q - ml).reshape(n, QK_K)


def _q6_k(blocks):
    n = blocks.shape[0]
    ql, qh, scales = blocks[:, :128], blocks[:, 128:192], blocks[:, 192:208]
    d = _f16(blocks[:, 208:210])
    dl = (d * scales.contiguous().view(torch.int8).float()).reshape(n, 16, 1)
    low = _bits(ql, [0, 4], 0x0F, 64).reshape(n, 8, 32)
    high = _bits(qh, [0, 2, 4, 6], 0x03, 32).reshape(n, 8, 32)
    q = ((low | (high << 4)).to(torch.int8) - 32).reshape(n, 16, 16).float()
    return (dl * q).reshape(n, QK_K)


_DECODERS = {
    "F32": _f32, "F16": _f16_values, "BF16": _bf16,
    "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1,
    "Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k,
}
