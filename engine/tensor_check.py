"""NaN and infinity in a GGUF's weights, found as llama.cpp's `--check-tensors` finds them.

Float tensors are checked value by value, quantized ones by their block scales (the quants
themselves are integers and cannot be NaN). The test is on the bits (an all-ones exponent), in
numpy, over the memory-mapped data a chunk at a time, so memory stays flat and a 100 MB file
takes a fraction of a second.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import pages
from .dequant import type_name
from .gguf_file import GGML_BLOCKS, GGUFFile, ModelFileError, TensorInfo

CHUNK_BYTES = 16 << 20

# float type id -> (unsigned view, exponent mask): F32, F16, F64, BF16
F16_EXPONENT, F32_EXPONENT = 0x7C00, 0x7F800000
FLOAT_BITS = {0: (np.uint32, F32_EXPONENT), 1: (np.uint16, F16_EXPONENT), 28: (np.uint64, 0x7FF0000000000000),
              30: (np.uint16, 0x7F80)}
# quantized type id -> byte offsets of the fp16 scales in a block (ggml-common.h): d, and m / dmin where present
F16_SCALES = {2: (0,), 3: (0, 2), 6: (0,), 7: (0, 2), 8: (0,), 9: (0, 2), 10: (80, 82), 11: (108,), 12: (0, 2),
              13: (0, 2), 14: (208,), 16: (0,), 17: (0,), 18: (0,), 19: (0,), 20: (0,), 21: (0,), 22: (0,),
              23: (0,), 34: (52,), 35: (64,)}
F32_SCALES = {15: (0,)}  # Q8_K
INTEGER_TYPES = (24, 25, 26, 27)  # I8, I16, I32, I64


@dataclass
class TensorReport:
    """What a check found: tensors with non-finite values, and tensors of types it cannot look into."""
    bad: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    checked: int = 0


def scan_tensors(gguf: GGUFFile) -> TensorReport:
    """Look at every tensor of `gguf` for NaN or infinity (values, or block scales)."""
    report = TensorReport()
    for info in gguf.tensors.values():
        finite = tensor_is_finite(info)
        if finite is None:
            report.unchecked.append(f"{info.name} ({type_name(info.ggml_type)})")
        else:
            report.checked += 1
            if not finite:
                report.bad.append(info.name)
    return report


def check_tensors(gguf: GGUFFile) -> TensorReport:
    """scan_tensors, raising one ModelFileError that names the file and the tensors when any is not finite."""
    report = scan_tensors(gguf)
    if report.bad:
        names = ", ".join(f"'{n}'" for n in report.bad[:5]) + (f" and {len(report.bad) - 5} more" if len(report.bad) > 5 else "")
        raise ModelFileError(f"{gguf.path}: NaN or infinite values in tensor{'s' if len(report.bad) > 1 else ''} {names}; "
                             "the file is corrupt (re-download or re-convert it)")
    return report


def tensor_is_finite(info: TensorInfo) -> bool | None:
    """Whether every value (float types) or block scale (quantized types) is finite; None for types not known here.

    Read CHUNK_BYTES at a time, each chunk's pages dropped from the process after (the page cache keeps
    them), so checking before packing does not make the whole file resident at once."""
    test = _test(info.ggml_type)
    if test is None:
        return None
    raw = np.asarray(info.data).reshape(-1).view(np.uint8)
    unit = GGML_BLOCKS[info.ggml_type][1]  # bytes per block (per value for float types)
    step = max(unit, CHUNK_BYTES // unit * unit)
    for start in range(0, raw.size, step):
        chunk = raw[start:start + step]
        finite = test(chunk.reshape(-1, unit))
        pages.drop(chunk)
        if not finite:
            return False
    return True


def _test(ggml_type: int) -> Callable[[np.ndarray], bool] | None:
    """The test for one chunk of a type's blocks, (n_blocks, block_bytes) bytes: True when all is finite."""
    if ggml_type in FLOAT_BITS:
        dtype, mask = FLOAT_BITS[ggml_type]
        return lambda blocks: _finite(blocks.reshape(-1).view(dtype), mask)
    if ggml_type in F16_SCALES:
        offsets = F16_SCALES[ggml_type]
        return lambda blocks: all(_finite(blocks[:, at:at + 2].view(np.uint16), F16_EXPONENT) for at in offsets)
    if ggml_type in F32_SCALES:
        offsets = F32_SCALES[ggml_type]
        return lambda blocks: all(_finite(blocks[:, at:at + 4].view(np.uint32), F32_EXPONENT) for at in offsets)
    if ggml_type in INTEGER_TYPES:
        return lambda blocks: True
    return None


def _finite(values: np.ndarray, mask: int) -> bool:
    """No value with an all-ones exponent (NaN or infinity)."""
    mask = values.dtype.type(mask)
    return not np.any((values & mask) == mask)
