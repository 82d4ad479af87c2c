"""Weight-only quantized linear layers that keep GGUF weights low-bit in memory (after gpt-fast's
WeightOnlyInt4Linear / WeightOnlyInt8Linear), computed by PyTorch's CPU int4/int8 kernels in bfloat16.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .dequant import GGML_TYPES, _as_bytes, _bits, _f16, _k_scales, _nibbles, dequantize, type_name
from .kernels import cpu_matmul

GROUP_SIZE = 32  # one GGUF block (Q4_0/Q4_1) or sub-block (Q4_K) per int4 group
INNER_K_TILES = 2  # the CPU packer ignores it; 2 asks least of K (a multiple of 32) on other backends
INT8_K_MULTIPLE = 16  # _weight_int8pack_mm returns garbage (or crashes) unless K is a multiple of 16
INT4_TYPES = ("Q4_0", "Q4_1", "Q4_K")
FORMATS = ("int4", "int4sym", "int8")  # int4sym: int4 without zeros (Q4_0), in the tiles layout only
LAYOUTS = ("torch", "tiles")


class PackedLinear(nn.Module):
    """A bias-free linear layer whose weight stays int4 or int8; computes in bfloat16, returns x's dtype.

    int4: 4-bit codes q in groups of 32 along `in_features`, w = (q - 8) * scale + zero, with a bf16
    scale and zero per group and output row. int8: w = q * scale with one bf16 scale per output row.
    """

    def __init__(self, in_features: int, out_features: int, format: str, packed_weight: torch.Tensor,
                 scales: torch.Tensor, layout: str = "torch"):
        super().__init__()
        if format not in FORMATS:
            raise ValueError(f"format '{format}' is not supported; choose one of {', '.join(FORMATS)}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout '{layout}' is not one of {', '.join(LAYOUTS)}")
        if format == "int4sym" and layout != "tiles":
            raise ValueError("format 'int4sym' exists only in the tiles layout")
        # "torch": PyTorch's _weight_int4pack_mm_for_cpu / _weight_int8pack_mm layouts; "tiles": the native
        # AVX-512 VNNI kernels' (kernels/cpu_matmul.c), which quantize activations to int8 as llama.cpp does
        self.in_features, self.out_features, self.format, self.layout = in_features, out_features, format, layout
        # int4: (out, in / 2) uint8 in the CPU kernel's layout; int8: (out, in rounded up to 16)
        self.register_buffer("packed_weight", packed_weight)
        # int4: (in / 32, out, 2) scale and zero; int8: (out,)
        self.register_buffer("scales", scales)

    @property
    def nbytes(self) -> int:
        return self.packed_weight.nbytes + self.scales.nbytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The CPU kernels are fast only for bfloat16 activations (float32 is 20-30x slower).
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()  # (rows, in_features)
        if self.layout == "tiles":
            y = TILE_KERNELS[self.format](rows, self.packed_weight, self.scales, self.out_features)
        elif self.format == "int4":
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed_weight, GROUP_SIZE, self.scales)
        else:
            pad = self.packed_weight.shape[1] - self.in_features
            y = torch.ops.aten._weight_int8pack_mm(F.pad(rows, (0, pad)) if pad else rows, self.packed_weight, self.scales)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)  # (..., out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, format={self.format}, layout={self.layout}"


TILE_KERNELS = {"int4": cpu_matmul.int4_matmul, "int4sym": cpu_matmul.int4sym_matmul, "int8": cpu_matmul.int8_matmul}


def reference_packed_linear(parts: list[tuple[np.ndarray | torch.Tensor, int, tuple[int, int], str]]) -> PackedLinear | None:
    """The reference packing, in torch over whole tensors: one PackedLinear computing the weights
    (data, ggml_type, shape (out_features, in_features), name) of one input, outputs concatenated.

    Q4_0, Q4_1 and Q4_K become int4 straight from their blocks: the 4-bit codes are kept as they
    are and only the per-group scale and zero are rounded to bf16. Every other type (Q8_0, Q5_*,
    Q2_K, Q3_K, Q5_K, Q6_K, F16, BF16, F32), and Q4 weights of a shape the int4 kernel cannot take
    (out_features not a multiple of 16), is dequantized and requantized to int8 with one scale
    per output row, max|w_row| / 127: a lossy step for the finer formats. None when the parts
    would not pack alike (different in_features, or int4 beside int8). packing.py does the same
    faster, bit for bit.
    """
    if len({shape[1] for _, _, shape, _ in parts}) != 1:
        return None
    int4 = [int4_exact(t, shape) for _, t, shape, _ in parts]
    if all(int4):
        codes, scales, zeros = zip(*(_int4_parts(*part) for part in parts))
        return int4_linear(torch.cat(codes), torch.cat(scales), torch.cat(zeros))
    if any(int4):
        return None  # mixed formats (e.g. Q4_K with a Q6_K attn_v): keep each layer its own format
    return int8_linear(torch.cat([dequantize(d, t, shape, name=n) for d, t, shape, n in parts]))


def int4_exact(ggml_type: int, shape: tuple[int, int]) -> bool:
    """Whether this GGUF weight maps onto int4 groups of 32 without requantizing."""
    return type_name(ggml_type) in INT4_TYPES and int4_packable(*shape)


def _int4_parts(data, ggml_type: int, shape: tuple[int, int], name: str):
    """codes (out, in) and per-group scales and zeros (out, in / 32), straight from the blocks."""
    out_features = shape[0]
    codes, scales, zeros = _INT4_CODES[type_name(ggml_type)](_blocks(data, ggml_type, shape, name))
    # blocks run along each row, so rows split evenly
    return codes.reshape(shape), scales.reshape(out_features, -1), zeros.reshape(out_features, -1)


def int4_packable(out_features: int, in_features: int) -> bool:
    """Whether the CPU int4 kernel takes this shape with groups of 32."""
    return out_features % 16 == 0 and in_features % GROUP_SIZE == 0


def int4_linear(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> PackedLinear:
    """codes: (out, in) values 0..15; scales, zeros: (out, in / 32). w = (codes - 8) * scale + zero."""
    out_features, in_features = codes.shape
    if not int4_packable(out_features, in_features):
        raise ValueError(f"int4 needs out_features % 16 == 0 and in_features % {GROUP_SIZE} == 0, got {tuple(codes.shape)}")
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), INNER_K_TILES)
    scales_and_zeros = torch.stack([scales, zeros], dim=-1).transpose(0, 1)  # (in / 32, out, 2)
    # Copied once the int32 codes are freed, the packed weight fills their hole in the heap instead
    # of pinning it (default model: peak RSS while loading 710 -> 460 MiB).
    return PackedLinear(in_features, out_features, "int4", packed.clone(), scales_and_zeros.to(torch.bfloat16).contiguous())


def int8_linear(weight: torch.Tensor) -> PackedLinear:
    """Requantize a float weight (out, in) to int8 with one scale per output row, max|w_row| / 127."""
    out_features, in_features = weight.shape
    weight = weight.float()
    # Round the scale to bf16 first so the codes are chosen against the scale the kernel will use.
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny).to(torch.bfloat16)
    codes = torch.round(weight / scales.float().unsqueeze(1)).clamp(-127, 127).to(torch.int8)  # (out, in)
    codes = F.pad(codes, (0, -in_features % INT8_K_MULTIPLE))  # zero columns meet zero-padded inputs
    return PackedLinear(in_features, out_features, "int8", codes.contiguous(), scales)


class Int8Embedding(nn.Module):
    """Token embeddings looked up from an int8 PackedLinear's rows (shared with a tied output head)."""

    def __init__(self, table: PackedLinear):
        super().__init__()
        if table.format != "int8":
            raise ValueError("Int8Embedding needs an int8 table")
        self.dim, self.tiles = table.in_features, table.layout == "tiles"
        self.register_buffer("codes", table.packed_weight)  # the same storage as the head's
        self.register_buffer("scales", table.scales)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tiles:  # row r: tile r // 16, lane r % 16 of every 4-input chunk; codes + 128
            n = self.codes.shape[0]
            tiled = self.codes.view(n // 16, self.dim // 4, 16, 4)
            codes = tiled[ids // 16, :, ids % 16].reshape(*ids.shape, self.dim).to(torch.int16) - 128
        else:
            codes = self.codes[ids, :self.dim]
        return codes.to(torch.bfloat16) * self.scales[ids].unsqueeze(-1)


class GGUFEmbedding(nn.Module):
    """Token embeddings decoded from the GGUF's mapped rows at each lookup, as llama.cpp's get_rows does:
    nothing to pack while loading, and only rows that are looked up come into memory."""

    def __init__(self, rows: np.ndarray, ggml_type: int, dim: int):
        super().__init__()
        self.rows, self.ggml_type, self.dim = rows, ggml_type, dim  # rows: (vocab, bytes per row), memory-mapped

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1).cpu().numpy()
        table = dequantize(self.rows[flat], self.ggml_type, (flat.size, self.dim))  # (tokens, dim) float32
        return table.to(torch.bfloat16).reshape(*ids.shape, self.dim)

    def extra_repr(self) -> str:
        return f"{len(self.rows)}, {self.dim}, {type_name(self.ggml_type)}, memory-mapped"


def _blocks(data, ggml_type: int, shape: tuple[int, int], name: str) -> torch.Tensor:
    label, block_elems, block_bytes = GGML_TYPES[ggml_type]
    raw, n_elements = _as_bytes(data), shape[0] * shape[1]
    if n_elements % block_elems or raw.numel() != n_elements // block_elems * block_bytes:
        raise ValueError(f"tensor '{name}': {raw.numel()} bytes do not hold {n_elements} {label} values")
    return raw.view(-1, block_bytes)  # (n_blocks, block_bytes)


# Each returns codes (n_blocks, block values) in 0..15 and the float32 scale and zero of each group
# of 32 codes, (n_blocks, groups per block), such that w = (q - 8) * scale + zero (ggml-common.h).
def _q4_0_codes(blocks):
    d = _f16(blocks[:, :2])
    return _nibbles(blocks[:, 2:], 16), d, torch.zeros_like(d)  # w = d * (q - 8)


def _q4_1_codes(blocks):
    d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    return _nibbles(blocks[:, 4:], 16), d, m + 8 * d  # w = d * q + m


def _q4_k_codes(blocks):
    n = blocks.shape[0]
    dl, ml = _k_scales(blocks)  # (n, 8, 1) each: d * sc and dmin * m of every 32-value sub-block
    q = _bits(blocks[:, 16:], [0, 4], 0x0F, 32).reshape(n, 256)  # sub-blocks in order, as in _q4_k
    return q, dl.reshape(n, 8), (8 * dl - ml).reshape(n, 8)  # w = d * sc * q - dmin * m


_INT4_CODES = {"Q4_0": _q4_0_codes, "Q4_1": _q4_1_codes, "Q4_K": _q4_k_codes}
