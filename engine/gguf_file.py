"""Read a GGUF v2/v3 file (ggml's container format): metadata, tensor directory, raw tensor bytes.

Follows ggml's docs/gguf.md. The file is memory-mapped once; metadata arrays are read in bulk and
each tensor's `data` is a numpy view of its bytes (nothing is copied). A model file is untrusted
input: every length, count, type and offset is checked before use, and any fault is one
`ModelFileError` that names the file and the problem.
"""
from __future__ import annotations

import logging
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_LEN = 1 << 24  # 64x the largest real vocabulary; keeps a hostile count from costing gigabytes

# ggml type id -> (elements per block, bytes per block), from ggml.h / gguf-py's GGML_QUANT_SIZES
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}
# Types whose data is viewed as typed values (F32, F16, I8, I16, I32, I64, F64); every other
# type, BF16 included, is raw uint8 bytes with the innermost dimension counted in bytes.
TYPED_DATA = {0: "<f4", 1: "<f2", 24: "<i1", 25: "<i2", 26: "<i4", 27: "<i8", 28: "<f8"}

# GGUF metadata value types: numbers by dtype, then the two composite ones
NUMBER_TYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9
UINT32 = 4
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class ModelFileError(ValueError):
    """A model file the engine cannot use; the message says why and what to do."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ggml_type: int  # a gguf.GGMLQuantizationType value
    shape: tuple[int, ...]  # outermost first, as torch expects (GGUF lists it innermost first)
    data: np.ndarray  # raw bytes (quantized) or typed values, memory-mapped


class GGUFFile:
    """Metadata and tensors of one GGUF file, memory-mapped (nothing is copied until asked)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _check_header(self.path)
        reader = _Reader(_map(self.path), self.path)
        try:
            self.metadata, self.tensors = reader.read()
        except ModelFileError:
            raise
        except (struct.error, ValueError, OverflowError, IndexError) as exc:  # a check we missed
            reader.fail(str(exc))
        self.version = int(self.metadata["GGUF.version"])

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def require(self, key: str):
        if key not in self.metadata:
            raise ModelFileError(f"{self.path}: metadata key '{key}' is missing; the file is not a complete model")
        return self.metadata[key]


def _check_header(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(f"model file not found: {path} (give the path of a .gguf file)")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file (give the path of a .gguf file)")
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelFileError(f"{path} cannot be read ({exc})") from exc
    if head[:4] != GGUF_MAGIC:
        raise ModelFileError(f"{path} is not a GGUF file (it does not start with 'GGUF'); "
                             "convert the model with llama.cpp's convert script")
    version = int.from_bytes(head[4:8], "little") if len(head) == 8 else 0
    if version not in (2, 3):
        raise ModelFileError(f"{path}: GGUF version {version} is not supported (only v2 and v3)")


def _map(path: Path) -> mmap.mmap:
    try:
        with path.open("rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # the map outlives the file handle
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path} cannot be read ({exc})") from exc


class _Reader:
    """A bounds-checked cursor over the mapped file, reading the header in file order."""

    def __init__(self, buf: mmap.mmap, path: Path):
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)

    def fail(self, problem: str) -> NoReturn:
        raise ModelFileError(f"{self.path} is not a readable GGUF file: {problem} (at byte {self.pos}); "
                             "it may be truncated or corrupt")

    def read(self) -> tuple[dict, dict[str, TensorInfo]]:
        """Header, metadata and tensor directory, in file order; tensor data stays mapped."""
        self.pos = 4
        version, n_tensors, n_kv = self.u32("the version"), self.u64("the tensor count"), self.u64("the key count")
        metadata = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
        alignment = self.read_metadata(n_kv, metadata)
        return metadata, self.read_tensors(n_tensors, alignment)

    def read_metadata(self, count: int, metadata: dict) -> int:
        """Fill `metadata` with `count` key/values; returns the data alignment they set."""
        self.check_count(count, 13, "metadata entries")  # key length 8 + type 4 + a value of 1 byte or more
        alignment = DEFAULT_ALIGNMENT
        for _ in range(count):
            key = self.name("a metadata key")
            if key in metadata:
                self.fail(f"metadata key '{key}' appears twice")
            kind = self.u32(f"the type of '{key}'")
            metadata[key] = self.value(kind, key)
            if key == "general.alignment":
                alignment = self.alignment(kind, metadata[key])
        return alignment

    def read_tensors(self, count: int, alignment: int) -> dict[str, TensorInfo]:
        self.check_count(count, 24, "tensors")  # name length 8 + rank 4 + type 4 + offset 8
        infos = [self.tensor_info() for _ in range(count)]
        data_start = _align(self.pos, alignment)  # tensor offsets count from the aligned end of the directory
        tensors = {}
        for name, dims, ggml_type, offset in infos:
            if name in tensors:
                self.fail(f"tensor '{name}' appears twice")
            if offset % alignment:  # ggml refuses these too; a shifted offset reads every value wrong
                self.fail(f"tensor '{name}' starts at offset {offset}, not a multiple of the alignment {alignment}")
            tensors[name] = self.tensor(name, dims, ggml_type, data_start + offset)
        return tensors

    def check_count(self, count: int, min_bytes: int, what: str) -> None:
        if count * min_bytes > self.size - self.pos:
            self.fail(f"the file claims {count} {what}, more than its {self.size} bytes can hold")

    def take(self, n: int, what: str) -> int:
        """Claim the next n bytes for `what`; returns where they start."""
        start = self.pos
        if n > self.size - start:
            self.fail(f"{what} needs {n} bytes but the file ends {self.size - start} bytes later")
        self.pos = start + n
        return start

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.buf, self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.buf, self.take(8, what))[0]

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"the length of {what}")
        start = self.take(n, what)
        return self.buf[start:start + n]

    def name(self, what: str) -> str:
        raw = self.raw_string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not valid UTF-8: {raw[:40]!r}")

    def value(self, kind: int, key: str):
        if kind == STRING:
            return self.raw_string(f"the value of '{key}'").decode("utf-8", errors="replace")
        if kind == ARRAY:
            return self.array(key)
        if kind not in NUMBER_TYPES:
            self.fail(f"metadata '{key}' has unknown value type {kind}")
        return self.numbers(NUMBER_TYPES[kind], 1, key)[0]

    def array(self, key: str) -> list:
        kind, count = self.u32(f"the item type of '{key}'"), self.u64(f"the length of '{key}'")
        if count > MAX_ARRAY_LEN:
            self.fail(f"metadata array '{key}' claims {count} items (the engine accepts up to {MAX_ARRAY_LEN})")
        if kind == STRING:
            return self.strings(count, key)
        if kind not in NUMBER_TYPES:  # arrays of arrays included: ggml does not read them either
            self.fail(f"metadata array '{key}' has unsupported item type {kind}")
        return self.numbers(NUMBER_TYPES[kind], count, key)

    def numbers(self, dtype: str, count: int, key: str) -> list:
        dt = np.dtype(dtype)
        start = self.take(count * dt.itemsize, f"the value of '{key}'")
        return np.frombuffer(self.buf, dt, count, start).tolist()

    def strings(self, count: int, key: str) -> list[str]:
        """`count` length-prefixed strings: the hot loop of opening a file (vocab and merges)."""
        self.check_count(count, 8, f"strings in '{key}'")
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        items = []
        append = items.append
        try:
            for _ in range(count):
                n = unpack(buf, pos)[0]
                pos += 8
                if n > size - pos:
                    break
                append(buf[pos:pos + n].decode("utf-8", errors="replace"))
                pos += n
        except struct.error:  # a length that would start past the end
            pass
        self.pos = pos
        if len(items) < count:
            self.fail(f"string {len(items)} of '{key}' runs past the end of the file")
        return items

    def tensor_info(self) -> tuple[str, list[int], int, int]:
        name = self.name("a tensor name")
        n_dims = self.u32(f"the rank of tensor '{name}'")
        if n_dims > MAX_DIMS:
            self.fail(f"tensor '{name}' has {n_dims} dimensions (ggml allows up to {MAX_DIMS})")
        dims = self.numbers("<u8", n_dims, f"the shape of tensor '{name}'")
        return name, dims, self.u32(f"the type of tensor '{name}'"), self.u64(f"the offset of tensor '{name}'")

    def alignment(self, kind: int, value) -> int:
        if kind != UINT32 or value <= 0 or value & (value - 1):
            self.fail(f"general.alignment must be a uint32 power of two, not {value!r}")
        return value

    def tensor(self, name: str, dims: list[int], ggml_type: int, start: int) -> TensorInfo:
        if ggml_type not in GGML_BLOCKS:
            self.fail(f"tensor '{name}' has unknown ggml type {ggml_type}")
        block_elems, block_bytes = GGML_BLOCKS[ggml_type]
        shape = tuple(reversed(dims))  # outermost first
        if not dims and ggml_type not in TYPED_DATA:
            self.fail(f"tensor '{name}' of a block type has no dimensions")
        if dims and dims[0] % block_elems:
            self.fail(f"tensor '{name}' has rows of {dims[0]} values, not whole blocks of {block_elems}")
        n_bytes = math.prod(dims) // block_elems * block_bytes
        if start + n_bytes > self.size:
            raise ModelFileError(f"{self.path} is truncated: tensor '{name}' ends at byte {start + n_bytes} "
                                 f"but the file has {self.size} bytes")
        if ggml_type in TYPED_DATA:
            dtype, view_shape = np.dtype(TYPED_DATA[ggml_type]), shape
        else:  # as gguf-py: raw bytes, innermost dimension in bytes
            dtype, view_shape = np.dtype(np.uint8), (*shape[:-1], shape[-1] // block_elems * block_bytes)
        data = np.frombuffer(self.buf, dtype, n_bytes // dtype.itemsize, start).reshape(view_shape)
        return TensorInfo(name=name, ggml_type=ggml_type, shape=shape, data=data)


def _align(pos: int, alignment: int) -> int:
    return pos + (-pos % alignment)
