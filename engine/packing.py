"""Packed (int4/int8) layers built straight from a GGUF's mapped bytes, on a few loader threads.

Q4_0/Q4_1/Q4_K weights go to PyTorch's CPU int4 layout (int4_pack), the other types to int8 rows
(int8_pack), both in numpy, so the loader threads start no OpenMP team (compute.py says why that
matters). A tensor's file pages are read ahead when its packing starts and dropped from the process
when it ends: the mapped file never sits in memory beside its packed copy. The reference is
quant_linear.reference_packed_linear (torch, whole tensors); this matches it bit for bit.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import pages
from .dequant import GGML_TYPES, UnsupportedTensorType, type_name
from .gguf_file import GGUFFile, ModelFileError
from .int4_pack import Q4_FORMATS, cpu_int4_layout, pack_int4
from .int4_scales import scales_and_zeros_into
from .int8_pack import DECODERS, int8_rows_into
from .kernels import cpu_matmul
from .model import Linear, Transformer
from .quant_linear import (
    GROUP_SIZE,
    INT8_K_MULTIPLE,
    GGUFEmbedding,
    Int8Embedding,
    PackedLinear,
    int4_exact,
    reference_packed_linear,
)
from .weight_cache import ArraySpec, WeightCache

# (fused module, its parts) computed as one matmul: q|k|v and gate|up
FUSED = {"attention.wqkv": ("attention.wq", "attention.wk", "attention.wv"),
         "feed_forward.w13": ("feed_forward.w1", "feed_forward.w3")}
MAX_THREADS = 4
PACKING_VERSION = 4  # part of a weight cache entry's key: change it whenever the packed bytes would change
SLAB_BYTES = 8 << 20  # GGUF bytes mapped at once per thread


@dataclass(frozen=True)
class Part:
    """One GGUF weight: name, ggml type id, shape (out_features, in_features), raw (mapped) data."""
    name: str
    ggml_type: int
    shape: tuple[int, int]
    data: np.ndarray

    @property
    def kind(self) -> str:
        return type_name(self.ggml_type)

    def rows(self) -> np.ndarray:
        """The data as bytes (out_features, bytes per row), checked against the type's block size."""
        if self.ggml_type not in GGML_TYPES:
            raise UnsupportedTensorType(f"tensor '{self.name}' has type {self.kind}, which the engine cannot decode; "
                                        f"supported: {', '.join(t[0] for t in GGML_TYPES.values())}")
        _, block_values, block_bytes = GGML_TYPES[self.ggml_type]
        out_features, in_features = self.shape
        raw = np.asarray(self.data).reshape(-1).view(np.uint8)
        if in_features % block_values or raw.size != out_features * in_features // block_values * block_bytes:
            raise ValueError(f"tensor '{self.name}': {raw.size} bytes do not hold {self.shape} {self.kind} values")
        return raw.reshape(out_features, -1)


@dataclass
class Job:
    """Pack `parts` (weights of one input, outputs concatenated) as module `name` in `format`; `install` puts
    the result in place."""
    name: str
    parts: list[Part]
    format: str  # "int4" or "int8"; "int4sym" once settled in the tiles layout when every part is Q4_0
    install: Callable[[PackedLinear], None] = lambda layer: None
    layout: str = "torch"  # "torch" (PyTorch's kernels) or "tiles" (the native ones: kernels/cpu_matmul.c)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # what run() packed, for a weight cache

    @property
    def in_features(self) -> int:
        return self.parts[0].shape[1]

    @property
    def out_features(self) -> int:
        return sum(p.shape[0] for p in self.parts)

    def tiles_fit(self) -> bool:
        """Whether the native kernels' tiles take these parts: whole 16-row tiles, whole 32-input groups
        (int4_exact parts always do)."""
        return all(p.shape[0] % cpu_matmul.TILE_ROWS == 0 for p in self.parts) and self.in_features % GROUP_SIZE == 0

    def settle(self, layout: str) -> None:
        """Take `layout` where the tiles fit, else PyTorch's; in tiles, Q4_0 weights keep no zeros (int4sym)."""
        self.layout = layout if self.tiles_fit() else "torch"
        if self.layout == "tiles" and self.format == "int4" and all(p.kind == "Q4_0" for p in self.parts):
            self.format = "int4sym"

    def in_numpy(self) -> bool:
        """Whether the fast numpy packers take it (and so may run on a loader thread)."""
        if self.format == "int8":
            return all(p.kind in DECODERS for p in self.parts)
        if self.layout == "tiles":
            return True
        layout = cpu_int4_layout()
        return layout is not None and all(p.shape[0] % layout.block_rows == 0 for p in self.parts[:-1])

    def specs(self) -> list[ArraySpec]:
        """The arrays the numpy packers fill: int4 codes (n, k / 2) and bf16 (scale, zero) pairs (k / 32, n, 2);
        int8 codes (n, k rounded up to 16; tiles: k bytes, codes + 128) and one bf16 scale per row."""
        n, k = self.out_features, self.in_features
        if self.format == "int4sym":  # tiles: one bf16 scale per row and group, each tile's together
            return [ArraySpec.of(f"{self.name}.packed_weight", (n, k // 2), np.uint8),
                    ArraySpec.of(f"{self.name}.scales", (n // 16, k // GROUP_SIZE, 16), np.int16)]
        if self.format == "int4":
            # the tiles layout keeps each 16-row tile's pairs together: (n / 16, k / 32, 16, 2)
            pairs = (n // 16, k // GROUP_SIZE, 16, 2) if self.layout == "tiles" else (k // GROUP_SIZE, n, 2)
            return [ArraySpec.of(f"{self.name}.packed_weight", (n, k // 2), np.uint8),
                    ArraySpec.of(f"{self.name}.scales", pairs, np.int16)]
        codes = ((n, k), np.uint8) if self.layout == "tiles" else ((n, k + -k % INT8_K_MULTIPLE), np.int8)
        return [ArraySpec.of(f"{self.name}.packed_weight", *codes), ArraySpec.of(f"{self.name}.scales", (n,), np.int16)]

    def run(self) -> PackedLinear:
        """Pack into new memory; the numpy packers' arrays stay in `self.arrays` (named as specs() names them)."""
        if not self.in_numpy():
            try:
                return reference_packed_linear([(p.data, p.ggml_type, p.shape, p.name) for p in self.parts])
            finally:
                for part in self.parts:
                    pages.drop(part.data)
        self.arrays = arrays = {spec.name: pages.empty(spec.shape, spec.dtype) for spec in self.specs()}
        weight, scales = (arrays[spec.name] for spec in self.specs())
        if self.format in ("int4", "int4sym"):
            _int4(self.parts, weight, scales, self.layout, symmetric=self.format == "int4sym")
        else:
            _int8(self.parts, weight, scales, self.layout)
        return self.layer(arrays)

    def layer(self, arrays: dict[str, np.ndarray]) -> PackedLinear:
        """The PackedLinear over packed `arrays` (this job's specs)."""
        weight, scales = (torch.from_numpy(arrays[spec.name]) for spec in self.specs())
        return PackedLinear(self.in_features, self.out_features, self.format, weight, scales.view(torch.bfloat16),
                            self.layout)


KERNELS = ("auto", "native", "torch")


def check_kernels(kernels: str) -> None:
    if kernels not in KERNELS:
        raise ValueError(f"kernels '{kernels}' is not one of {', '.join(KERNELS)}")


def packed_layout(kernels: str = "auto") -> str:
    """The packed layers' layout for `kernels`: "tiles" for the native kernels ("auto": where they run on this
    CPU), "torch" for PyTorch's."""
    check_kernels(kernels)
    if kernels == "torch":
        return "torch"
    if cpu_matmul.available():
        return "tiles"
    if kernels == "native":
        raise ValueError("the native kernels need an x86 CPU with AVX-512 VNNI and a C compiler (cc); "
                         "use kernels='torch'")
    return "torch"


def weight_format(parts: list[Part]) -> str | None:
    """int4 when every part's Q4 blocks map onto int4 groups, int8 when none do, else None (do not fuse)."""
    if len({p.shape[1] for p in parts}) != 1:
        return None
    int4 = [int4_exact(p.ggml_type, p.shape) for p in parts]
    return "int4" if all(int4) else None if any(int4) else "int8"


def pack_linear(parts: list[Part], layout: str = "torch") -> PackedLinear | None:
    """One PackedLinear for `parts` (one weight, or several of one input fused); None when they would not fuse."""
    fmt = weight_format(parts)
    if fmt is None:
        return None
    job = Job("linear", parts, fmt)
    job.settle(layout)
    return job.run()


def _int4(parts: list[Part], weight: np.ndarray, scales: np.ndarray, layout: str, symmetric: bool = False) -> None:
    """Fill weight (n, k / 2) uint8 and scales (k / 32, n, 2) int16 (bf16 bits of (scale, zero), as the
    kernel reads them; tiles: (n / 16, k / 32, 16, 2), or (n / 16, k / 32, 16) scales alone when symmetric)."""
    tiles, torch_layout = layout == "tiles", cpu_int4_layout()
    # one uint32 (scale, zero) each: (groups, n), or (n / 16, groups, 16) for tiles; symmetric: one uint16
    pairs = scales.view(np.uint16) if symmetric else scales.view(np.uint32)[..., 0]
    for at, rows, kind in _slabs(parts, cpu_matmul.TILE_ROWS if tiles else torch_layout.block_rows):
        end = at + rows.shape[0]
        if tiles:
            fmt = Q4_FORMATS[kind]  # compiled: the numpy int4_pack.pack_int4_tiles took ~2x the time of a load
            cpu_matmul.pack_q4_tiles(rows, fmt.block_values, fmt.block_bytes, fmt.codes_at, fmt.run, weight[at:end])
            by_group = np.empty((pairs.shape[1], rows.shape[0]), np.uint32)
            scales_and_zeros_into(rows, kind, by_group)
            tiled = by_group.reshape(by_group.shape[0], -1, 16).transpose(1, 0, 2)
            pairs[at // 16:end // 16] = tiled & 0xFFFF if symmetric else tiled  # Q4_0: the zero half is 0
        else:
            pack_int4(rows, Q4_FORMATS[kind], torch_layout, weight[at:end])
            scales_and_zeros_into(rows, kind, pairs[:, at:end])


def _int8(parts: list[Part], codes: np.ndarray, scales: np.ndarray, layout: str) -> None:
    """Fill codes (n, k rounded up) int8, or (n, k) uint8 tiles, and scales (n,) int16 (bf16 bits)."""
    tiles = layout == "tiles"
    for at, rows, kind in _slabs(parts, cpu_matmul.TILE_ROWS if tiles else 1):
        end = at + rows.shape[0]
        if not tiles:
            int8_rows_into(rows, kind, codes[at:end], scales.view(np.uint16)[at:end])
            continue
        n, k = rows.shape[0], codes.shape[1]
        flat = np.empty((n, k), np.int8)
        int8_rows_into(rows, kind, flat, scales.view(np.uint16)[at:end])
        # c + 128 is c's two's-complement byte with its top bit flipped; (tile, 4 inputs, row, 4)
        biased = np.bitwise_xor(flat.view(np.uint8), 0x80).reshape(n // 16, 16, k // 4, 4)
        codes[at:end].reshape(n // 16, k // 4, 16, 4)[...] = biased.transpose(0, 2, 1, 3)


def _slabs(parts: list[Part], multiple: int):
    """(first output row, rows, ggml type name) of every part in slabs of about SLAB_BYTES (whole `multiple`s
    of rows): each slab's file pages are mapped in one call before it is packed, and dropped once it is."""
    at = 0
    for part in parts:
        rows = part.rows()
        step = max(multiple, SLAB_BYTES // rows.shape[1] // multiple * multiple)
        previous = 0
        for first in range(0, rows.shape[0], step):
            slab = rows[first:first + step]
            pages.populate(slab)
            yield at + first, slab, part.kind
            pages.drop(rows[previous:first + step])  # from the previous slab on: the page they share goes too
            previous = first
        at += rows.shape[0]


class ModelPacking:
    """The packed layers of one model: planned from the tensor directory (nothing read), then mapped from a
    weight cache entry or packed from the file (into a new entry when a cache is given)."""

    def __init__(self, model: Transformer, gguf: GGUFFile, mapping: dict[str, str], kernels: str = "auto"):
        self.gguf, self.layout = gguf, packed_layout(kernels)
        self.rest = dict(mapping)  # what is left for dense loading (norms)
        self.jobs = _embedding_jobs(model, gguf, self.rest) + _fused_jobs(model, gguf, self.rest) \
            + _linear_jobs(model, gguf, self.rest)
        self.jobs.sort(key=lambda job: -sum(p.data.nbytes for p in job.parts))  # largest first: threads end together
        for job in self.jobs:
            job.settle(self.layout)
        self.cacheable = all(job.in_numpy() for job in self.jobs)  # the torch reference's arrays are its own
        self.specs = [spec for job in self.jobs for spec in job.specs()] if self.cacheable else []
        self._cache_key: str | None = None  # the file's entry name: a stat and a 1 MiB read, made once

    def load_cached(self, cache: WeightCache | None) -> bool:
        """Install every layer from `cache`'s entry for this file; False (nothing installed) when there is none."""
        if cache is None or not self.cacheable:
            return False
        arrays = cache.open(self._key(cache), self.specs)
        if arrays is None:
            return False
        for job in self.jobs:
            job.install(job.layer(arrays))
        return True

    def pack(self, cache: WeightCache | None = None) -> None:
        """Pack every layer from the file; with a `cache` that has room, then write them to a new entry
        in the background."""
        try:
            _run_all(self.jobs)
        except ValueError as exc:  # a tensor whose bytes do not match its type and shape, or an unknown type
            raise ModelFileError(f"{self.gguf.path}: {exc}") from exc
        writer = cache.create(self._key(cache), self.specs, self.gguf.path) if cache and self.cacheable else None
        if writer is not None:
            writer.start({name: array for job in self.jobs for name, array in job.arrays.items()})

    def _key(self, cache: WeightCache) -> str:
        if self._cache_key is None:
            layout = "tiles" if self.layout == "tiles" else cpu_int4_layout()
            self._cache_key = cache.key(self.gguf.path, f"packing {PACKING_VERSION}, torch {torch.__version__}, "
                                                        f"int4 {layout}")
        return self._cache_key


def drop_file_pages(gguf: GGUFFile) -> None:
    """Take the whole mapped file out of the resident set once the weights are loaded: the per-slab drops
    leave large folios that straddle tensors, and reading the norms maps 2 MiB folios whole. The pages stay
    in the page cache; untied embeddings (GGUFEmbedding) fault their rows back in when looked up."""
    if gguf.tensors:
        pages.drop_mapping(next(iter(gguf.tensors.values())).data)


def _run_all(jobs: list[Job]) -> None:
    threads = min(MAX_THREADS, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    with ThreadPoolExecutor(threads, thread_name_prefix="engine-pack") as pool:
        try:
            futures = [(job, pool.submit(job.run)) for job in jobs if job.in_numpy()]
            for job in jobs:
                if not job.in_numpy():  # the torch reference: here, on the compute thread
                    job.install(job.run())
            for job, future in futures:
                job.install(future.result())
        finally:
            pool.shutdown(cancel_futures=True)


def _part(gguf: GGUFFile, name: str, expected: tuple[int, ...]) -> Part:
    info = gguf.tensors[name]
    if tuple(info.shape) != expected:
        raise ModelFileError(f"{gguf.path}: tensor '{name}' has shape {tuple(info.shape)}, expected {expected}")
    return Part(name, info.ggml_type, tuple(info.shape), info.data)


def _embedding_jobs(model: Transformer, gguf: GGUFFile, rest: dict[str, str]) -> list[Job]:
    """Untied: embeddings read from the mapped file per lookup. Tied: one int8 table for lookup and head."""
    part = _part(gguf, "token_embd.weight", tuple(model.tok_embeddings.weight.shape))
    del rest["token_embd.weight"]
    if not model.args.tied_output:
        model.tok_embeddings = GGUFEmbedding(part.rows(), part.ggml_type, model.args.dim)
        return []

    def install(table: PackedLinear) -> None:
        model.tok_embeddings, model.output = Int8Embedding(table), table

    return [Job("tok_embeddings", [part], "int8", install)]


def _fused_jobs(model: Transformer, gguf: GGUFFile, rest: dict[str, str]) -> list[Job]:
    gguf_name_of = {ours.removesuffix(".weight"): g for g, ours in rest.items()}
    jobs = []
    for i, layer in enumerate(model.layers):
        for fused_name, part_names in FUSED.items():
            parts = [_part(gguf, gguf_name_of[f"layers.{i}.{p}"], tuple(layer.get_submodule(p).weight.shape))
                     for p in part_names]
            fmt = weight_format(parts)
            if fmt is None:
                continue  # mixed formats (e.g. Q4_K with a Q6_K attn_v): each layer keeps its own
            jobs.append(Job(f"layers.{i}.{fused_name}", parts, fmt, _installer(layer, fused_name, part_names)))
            for part in parts:
                del rest[part.name]
    return jobs


def _installer(layer: nn.Module, fused_name: str, part_names: tuple[str, ...]) -> Callable[[PackedLinear], None]:
    def install(fused: PackedLinear) -> None:
        _replace(layer, fused_name, fused)
        for name in part_names:
            _replace(layer, name, None)  # the part now lives in the fused matmul
    return install


def _linear_jobs(model: Transformer, gguf: GGUFFile, rest: dict[str, str]) -> list[Job]:
    jobs = []
    for gguf_name, our_name in list(rest.items()):
        module_name = our_name.removesuffix(".weight")
        module = model.get_submodule(module_name)
        if not isinstance(module, Linear):
            continue
        part = _part(gguf, gguf_name, tuple(module.weight.shape))
        jobs.append(Job(module_name, [part], weight_format([part]),
                        lambda layer, name=module_name: model.set_submodule(name, layer)))
        del rest[gguf_name]
    return jobs


def _replace(module: nn.Module, name: str, new: nn.Module | None) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent), attr, new)
