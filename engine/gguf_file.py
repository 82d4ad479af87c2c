"""Read a GGUF v2/v3 file (ggml's container format): metadata, tensor directory, raw tensor bytes.

The `gguf` package parses the container and memory-maps the data; this module turns its
failures into one clear `ModelFileError` and checks what the parser does not (truncation).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


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
        try:
            from gguf import GGUFReader

            reader = GGUFReader(self.path, "r")
        except (ValueError, IndexError, OSError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{self.path}: not a readable GGUF file ({exc}); it may be truncated or corrupt") from exc
        self.metadata = {name: _field_value(field) for name, field in reader.fields.items()}
        self.version = int(self.metadata.get("GGUF.version", 0))
        self.tensors = {t.name: _tensor_info(t) for t in reader.tensors}
        _check_complete(self.path, reader)

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
    with path.open("rb") as f:
        head = f.read(8)
    if head[:4] != GGUF_MAGIC:
        raise ModelFileError(f"{path} is not a GGUF file (it does not start with 'GGUF'); "
                             "convert the model with llama.cpp's convert script")
    version = int.from_bytes(head[4:8], "little") if len(head) == 8 else 0
    if version not in (2, 3):
        raise ModelFileError(f"{path}: GGUF version {version} is not supported (only v2 and v3)")


def _check_complete(path: Path, reader) -> None:
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ModelFileError(f"{path} is truncated: tensor '{t.name}' ends at byte {t.data_offset + t.n_bytes} "
                                 f"but the file has {size}")


def _field_value(field):
    """Decode a ReaderField into a Python scalar, string or list."""
    from gguf import GGUFValueType

    kinds = field.types
    if not kinds:
        return None
    if kinds[0] == GGUFValueType.ARRAY:
        items = [field.parts[i] for i in field.data]
        if kinds[-1] == GGUFValueType.STRING:
            return [bytes(x).decode("utf-8", errors="replace") for x in items]
        return [x.item() if x.size == 1 else x.tolist() for x in items]
    value = field.parts[field.data[0]]
    if kinds[0] == GGUFValueType.STRING:
        return bytes(value).decode("utf-8", errors="replace")
    return value.item() if value.size == 1 else value.tolist()


def _tensor_info(t) -> TensorInfo:
    shape = tuple(int(n) for n in reversed(t.shape.tolist()))
    return TensorInfo(name=t.name, ggml_type=int(t.tensor_type), shape=shape, data=t.data)
