"""Packed weights kept on disk, so that a model's second load maps what its first load packed.

An entry is two files in the cache folder: `<key>.bin`, the packed arrays back to back (64-byte
aligned), and `<key>.json`, its manifest (the arrays' names, shapes, types and offsets, and the GGUF it
came from). The key hashes everything that makes packed bytes valid for a file: the file's identity
(size, modification time, inode, and its first MiB: header, metadata and tensor directory) and the
caller's `salt` (packer version, PyTorch version, the CPU int4 layout). A file that changes gets a new
key; when an entry is written, older entries of the same path and, past the byte budget, the least
recently used ones are removed.

A first load packs into memory as it does without a cache and writes the entry on a thread of its own
while the model runs (writing through a shared mapping of the file instead cost the load 3 s of page
faults on a 7B). The entry appears, data file first, manifest last, only once every array is in, so a
crash leaves a `.tmp` file that the next write to the folder sweeps away. A hit maps the data file
copy-on-write (writable views that nothing writes to: the pages stay the page cache's) and faults it
in with one madvise, so that the first forward does not.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import pages

log = logging.getLogger(__name__)

ALIGN = 64
HEAD_BYTES = 1 << 20  # the part of the GGUF hashed into the key: header, metadata, tensor directory
DEFAULT_BUDGET_BYTES = 20 << 30
FREE_MARGIN_BYTES = 1 << 30  # an entry is written only if the disk keeps this much free after it
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ArraySpec:
    """One packed array: its name, shape and numpy type (a `np.dtype.str`, e.g. '|u1', '<i2')."""
    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, name: str, shape: tuple[int, ...], dtype) -> ArraySpec:
        return cls(name, tuple(int(d) for d in shape), np.dtype(dtype).str)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class WeightCache:
    """A folder of packed-weight entries within `budget_bytes` of disk."""

    def __init__(self, folder: str | Path, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self.folder, self.budget_bytes = Path(folder), budget_bytes
        self._writers: list[CacheWriter] = []

    def wait(self) -> None:
        """Until the entries this object started writing are written (a process that ends by os._exit, as a
        multiprocessing worker does, would not wait for their threads)."""
        for writer in self._writers:
            if writer.thread is not None:
                writer.thread.join()

    def key(self, gguf_path: Path, salt: str) -> str:
        """The entry name for this file as it is now, packed the way `salt` says."""
        st = gguf_path.stat()
        digest = hashlib.sha256(f"{MANIFEST_VERSION}|{salt}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode())
        with gguf_path.open("rb") as f:
            digest.update(f.read(HEAD_BYTES))
        return f"{re.sub(r'[^A-Za-z0-9_-]', '_', gguf_path.stem)[:48]}-{digest.hexdigest()[:16]}"

    def open(self, key: str, specs: list[ArraySpec]) -> dict[str, np.ndarray] | None:
        """The arrays of entry `key`, mapped and faulted in; None when there is no such entry or it does not
        hold exactly `specs` (then it is written anew)."""
        manifest = self._manifest(key)
        if manifest is None:
            return None
        data = self.folder / f"{key}.bin"
        layout = _layout(specs)
        if manifest.get("arrays") != _arrays_entry(layout[0]) \
                or not data.is_file() or data.stat().st_size != layout[1]:
            log.warning("weight cache entry %s does not match this engine's packing; packing again", key)
            return None
        try:
            with data.open("rb") as f:
                buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError) as exc:
            log.warning("weight cache entry %s cannot be read (%s); packing again", key, exc)
            return None
        with contextlib.suppress(OSError):  # a read-only folder: the entry still serves
            os.utime(self.folder / f"{key}.json")  # last use, for eviction
        whole = np.frombuffer(buffer, np.uint8)
        pages.prefault(whole)
        return _views(whole, layout[0])

    def create(self, key: str, specs: list[ArraySpec], source: Path) -> CacheWriter | None:
        """A writer of entry `key` for `specs`; None (logged) when the folder cannot be written or the disk
        would be left with less than FREE_MARGIN_BYTES."""
        layout, total = _layout(specs)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._sweep_unfinished()
            free = shutil.disk_usage(self.folder).free
            if free - total < FREE_MARGIN_BYTES:
                log.warning("not caching packed weights (%.1f GiB) in %s: %.1f GiB free", total / 2**30,
                            self.folder, free / 2**30)
                return None
            writer = CacheWriter(self, key, layout, total, source)
            self._writers.append(writer)
            return writer
        except OSError as exc:
            log.warning("not caching packed weights in %s: %s", self.folder, exc)
            return None

    def entries(self) -> list[dict]:
        """Every complete entry: key, source GGUF, bytes, created and last used (Unix time), newest use first."""
        out = []
        for path in self.folder.glob("*.json") if self.folder.is_dir() else []:
            manifest = self._manifest(path.stem)
            data = path.with_suffix(".bin")
            if manifest is not None and data.is_file():
                out.append({"key": path.stem, "source": manifest.get("source"), "path": str(data),
                            "bytes": data.stat().st_size,
                            "created": manifest.get("created"), "last_used": path.stat().st_mtime})
        return sorted(out, key=lambda e: -e["last_used"])

    def entries_of(self, gguf_path: str | Path) -> list[dict]:
        """The entries packed from this GGUF path (one, unless the file changed and was loaded again since)."""
        source = str(Path(gguf_path).resolve())
        return [entry for entry in self.entries() if entry["source"] == source]

    def forget(self, gguf_path: str | Path) -> None:
        """Remove the entries of this GGUF path: its next load packs it again."""
        for entry in self.entries_of(gguf_path):
            self.remove(entry["key"])

    def remove(self, key: str) -> None:
        for suffix in (".json", ".bin"):  # manifest first: an entry without it is no longer found
            (self.folder / f"{key}{suffix}").unlink(missing_ok=True)

    def clear(self) -> int:
        """Remove every entry and unfinished write; returns the bytes freed."""
        freed = 0
        for path in list(self.folder.glob("*.bin")) + list(self.folder.glob("*.tmp")) if self.folder.is_dir() else []:
            freed += path.stat().st_size
            path.with_suffix(".json").unlink(missing_ok=True)
            path.unlink(missing_ok=True)
        return freed

    def _manifest(self, key: str) -> dict | None:
        try:
            manifest = json.loads((self.folder / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) and manifest.get("version") == MANIFEST_VERSION else None

    def _sweep_unfinished(self) -> None:
        """Writes that did not finish: a .tmp whose writer is gone (its pid in the name no longer runs)."""
        for path in self.folder.glob("*.tmp"):
            pid = path.suffixes[-2].lstrip(".") if len(path.suffixes) >= 2 else ""
            if not pid.isdigit() or not _running(int(pid)):
                path.unlink(missing_ok=True)

    def _evict_for(self, key: str, source: str, new_bytes: int) -> None:
        """Older entries of the same GGUF path, then the least recently used past the budget."""
        kept = 0
        for entry in self.entries():  # newest use first
            if entry["key"] == key:
                continue
            if entry["source"] == source or kept + entry["bytes"] + new_bytes > self.budget_bytes:
                log.info("weight cache: removing %s (%.1f GiB)", entry["key"], entry["bytes"] / 2**30)
                self.remove(entry["key"])
            else:
                kept += entry["bytes"]


class CacheWriter:
    """One entry being written to `<key>.<pid>.tmp` on a thread of its own; `start` begins, the entry is
    published (data file, then manifest) when every array is written."""

    def __init__(self, cache: WeightCache, key: str, layout: list[tuple[ArraySpec, int]], total: int, source: Path):
        self.cache, self.key, self.layout, self.total, self.source = cache, key, layout, total, source
        self.tmp = cache.folder / f"{key}.{os.getpid()}.tmp"
        self.thread: threading.Thread | None = None

    def start(self, arrays: dict[str, np.ndarray]) -> None:
        """Write `arrays` (one per spec) in the background. Not a daemon thread: a short-lived process waits
        for the entry at exit rather than leave half of it behind (the disk, not the CPU, sets the pace)."""
        log.info("caching the packed weights of %s (%.2f GiB) in %s", self.source.name, self.total / 2**30,
                 self.cache.folder)
        self.thread = threading.Thread(target=self._write, args=(arrays,), name="engine-weight-cache")
        self.thread.start()

    def _write(self, arrays: dict[str, np.ndarray]) -> None:
        try:
            with self.tmp.open("wb") as f:
                f.truncate(self.total)
                for spec, at in self.layout:
                    f.seek(at)
                    f.write(memoryview(np.ascontiguousarray(arrays[spec.name]).reshape(-1).view(np.uint8)))
            self._publish()
        except OSError as exc:
            log.warning("could not write the weight cache entry %s: %s", self.key, exc)
            self.tmp.unlink(missing_ok=True)

    def _publish(self) -> None:
        folder, key = self.cache.folder, self.key
        manifest = {"version": MANIFEST_VERSION, "source": str(self.source.resolve()), "created": time.time(),
                    "bytes": self.total, "arrays": _arrays_entry(self.layout)}
        os.replace(self.tmp, folder / f"{key}.bin")
        written = folder / f"{key}.json.{os.getpid()}.tmp"
        written.write_text(json.dumps(manifest))
        os.replace(written, folder / f"{key}.json")
        self.cache._evict_for(key, manifest["source"], self.total)
        log.info("cached the packed weights of %s: %s", self.source.name, folder / f"{key}.bin")


def _layout(specs: list[ArraySpec]) -> tuple[list[tuple[ArraySpec, int]], int]:
    """Each spec with its byte offset (ALIGN-aligned), and the total size."""
    out, at = [], 0
    for spec in specs:
        at = -(-at // ALIGN) * ALIGN
        out.append((spec, at))
        at += spec.nbytes
    return out, at


def _arrays_entry(layout: list[tuple[ArraySpec, int]]) -> list[list]:
    """The manifest's list of arrays (name, shape, type, offset), written and compared in this one form."""
    return [[s.name, list(s.shape), s.dtype, at] for s, at in layout]


def _views(whole: np.ndarray, layout: list[tuple[ArraySpec, int]]) -> dict[str, np.ndarray]:
    return {s.name: whole[at:at + s.nbytes].view(s.dtype).reshape(s.shape) for s, at in layout}


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

