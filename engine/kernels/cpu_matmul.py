"""The native CPU kernels: AVX-512 VNNI int4 and int8 matmuls, RMSNorm and RoPE (cpu_matmul.c), decode
attention over the paged KV pool (cpu_attention.c), the sampler's filters and draw (cpu_sampling.c) and a
decode step's layers in one call (cpu_decode.c, over the others), built with the system C compiler on first
use into one library, called through ctypes.

The library is compiled once per source and flags into a folder of the system temp dir and linked to
the OpenMP runtime PyTorch already loaded (same soname), so its parallel regions use PyTorch's thread
team instead of starting a second one (compute.py says why two teams on two cores are slow). Where
the CPU lacks the instructions, or there is no compiler, `available()` is False and PackedLinear runs
PyTorch's int4 and int8 kernels on their own layouts instead.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

SOURCES = tuple(Path(__file__).with_name(name)
                for name in ("cpu_matmul.c", "cpu_attention.c", "cpu_sampling.c", "cpu_decode.c"))
HEADERS = tuple(Path(__file__).with_name(name) for name in ("simd.h", "kernels.h"))
FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
         "-mavx512vnni", "-mfma")
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni")
TILE_ROWS, GROUP = 16, 32


def cpu_supports() -> bool:
    """Whether this CPU has every instruction set the kernel is compiled for (Linux: /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return all(flag in flags for flag in CPU_FLAGS)


@functools.cache
def _library() -> ctypes.CDLL | None:
    if not cpu_supports():
        log.info("native kernels: this CPU lacks AVX-512 VNNI; PyTorch's kernels are used")
        return None
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.warning("native kernels: no C compiler (cc) on PATH; PyTorch's kernels are used (about 2x slower)")
        return None
    try:
        lib = ctypes.CDLL(str(_built(compiler)))
    except (OSError, subprocess.CalledProcessError) as exc:
        log.warning("native kernels could not be built or loaded (%s); PyTorch's kernels are used", exc)
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    for kernel in (lib.int4_matmul, lib.int4sym_matmul, lib.int8_matmul):
        kernel.argtypes = [p, i64, i64, p, p, i64, p, p, p, p, ctypes.c_int]
        kernel.restype = None
    lib.pack_q4_tiles.argtypes = [p, i64, i64, i64, i64, i64, i64, p, ctypes.c_int]
    lib.pack_q4_tiles.restype = None
    lib.rms_norm_bf16.argtypes = [p, i64, i64, p, ctypes.c_float, p]
    lib.rms_norm_bf16.restype = None
    lib.rope_bf16.argtypes = [p, i64, i64, i64, i64, p, ctypes.c_int]
    lib.rope_bf16.restype = None
    lib.paged_decode_attention_bf16.argtypes = [p, i64, i64, i64, i64, i64, p, p, p, i64, p, i64, i64, i64, p, p, p,
                                                    ctypes.c_int]
    lib.paged_decode_attention_bf16.restype = None
    lib.sample_rows.argtypes = [p, i64, i64, p, p, p, p, p, p, p, ctypes.c_int]
    lib.sample_rows.restype = None
    lib.mask_disallowed_f32.argtypes = [p, i64, i64, p, i64]
    lib.mask_disallowed_f32.restype = None
    lib.decode_layers.argtypes = [p, p, i64, p, p, p, i64, p, i64, p, i64, ctypes.c_int]
    lib.decode_layers.restype = None
    return lib


def _built(compiler: str) -> Path:
    """The shared library for these sources and flags, compiled once (atomically: a rename)."""
    text = b"".join(path.read_bytes() for path in (*SOURCES, *HEADERS))
    digest = hashlib.sha256(text + " ".join((compiler, *FLAGS)).encode()).hexdigest()[:16]
    folder = _private_folder(Path(tempfile.gettempdir()) / f"reason-studio-kernels-{os.getuid()}")
    target = folder / f"cpu_matmul-{digest}.so"
    if target.is_file():
        return target
    partial = folder / f"{target.name}.{os.getpid()}.tmp"
    subprocess.run([compiler, *FLAGS, *map(str, SOURCES), "-o", str(partial), "-lm"], check=True,
                   capture_output=True, timeout=120)
    os.replace(partial, target)
    return target


def _private_folder(folder: Path) -> Path:
    """`folder`, made if missing, when only this user can write it (a library loaded from a folder that
    others can write to would run their code); otherwise a new private folder of its own."""
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.lstat()
    if folder.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o022:
        log.warning("native kernels: %s is not this user's private folder; building in a new one", folder)
        return Path(tempfile.mkdtemp(prefix="reason-studio-kernels-"))
    return folder


def available() -> bool:
    return _library() is not None


def int4_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, out_features: int) -> torch.Tensor:
    """x (M, K) bf16 contiguous @ W^T -> (M, N) bf16; weight: the int4 tiles layout (N * K / 2 bytes), scales:
    (N / 16, K / 32, 16, 2) bf16 (scale, zero) pairs."""
    return _matmul(_library().int4_matmul, x, weight, scales, out_features)


def int4sym_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, out_features: int) -> torch.Tensor:
    """As int4_matmul for weights without zeros (Q4_0): scales (N / 16, K / 32, 16) bf16."""
    return _matmul(_library().int4sym_matmul, x, weight, scales, out_features)


def int8_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, out_features: int) -> torch.Tensor:
    """x (M, K) bf16 contiguous @ W^T -> (M, N) bf16; weight: the int8 tiles layout (N * K bytes, codes + 128),
    scales: (N,) bf16."""
    return _matmul(_library().int8_matmul, x, weight, scales, out_features)


def _matmul(kernel, x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, out_features: int) -> torch.Tensor:
    M, K = x.shape
    y = torch.empty(M, out_features, dtype=torch.bfloat16)
    xq = torch.empty(M * K, dtype=torch.int8)  # the activations' int8 codes, group scales and code sums
    dx = torch.empty(M * (K // GROUP), dtype=torch.float32)
    sx = torch.empty(M * (K // GROUP), dtype=torch.int32)
    kernel(x.data_ptr(), M, K, weight.data_ptr(), scales.data_ptr(), out_features, y.data_ptr(),
           xq.data_ptr(), dx.data_ptr(), sx.data_ptr(), torch.get_num_threads())
    return y


def pack_q4_tiles(rows: np.ndarray, block_values: int, block_bytes: int, codes_at: int, run: int,
                  out: np.ndarray, threads: int = 1) -> None:
    """GGUF Q4 rows (n, row bytes) uint8, n a multiple of 16 -> out (n, in_features / 2) uint8 in the int4
    tiles layout (int4_pack.pack_int4_tiles is the numpy reference). ctypes lets go of the GIL meanwhile."""
    assert rows.flags.c_contiguous and out.flags.c_contiguous and rows.shape[0] % TILE_ROWS == 0
    _library().pack_q4_tiles(rows.ctypes.data, rows.shape[0], rows.shape[1], block_values, block_bytes, codes_at,
                             run, out.ctypes.data, threads)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of x (..., dim) bf16 contiguous by weight (dim,) bf16, in float32, as one call (model.RMSNorm's
    F.rms_norm path is the reference)."""
    y = torch.empty_like(x)
    dim = x.shape[-1]
    _library().rms_norm_bf16(x.data_ptr(), x.numel() // dim, dim, weight.data_ptr(), eps, y.data_ptr())
    return y


def rope_(qkv: torch.Tensor, heads: int, freqs_cis: torch.Tensor, layout: str) -> None:
    """RoPE in place on the first `heads` heads of qkv (B, T, all heads, head_dim) bf16 contiguous, with
    freqs_cis (B, T, head_dim / 2, 2) (cos, sin); rope.apply_rotary_emb is the reference."""
    B, T, total, head_dim = qkv.shape
    cos_sin = freqs_cis.float().contiguous()
    _library().rope_bf16(qkv.data_ptr(), B * T, total * head_dim, heads, head_dim, cos_sin.data_ptr(),
                         int(layout == "neox"))


MAX_GROUPS, MAX_GROUP_VALUES, MAX_HEAD_DIM = 16, 4096, 256  # as cpu_attention.c holds a KV head's queries


def decode_attention_fits(heads: int, kv_heads: int, head_dim: int) -> bool:
    """Whether paged_decode_attention takes this attention shape."""
    groups = heads // kv_heads
    return head_dim % 16 == 0 and head_dim <= MAX_HEAD_DIM and groups <= MAX_GROUPS \
        and groups * head_dim <= MAX_GROUP_VALUES


def paged_decode_attention(qkv: torch.Tensor, heads: int, kv_heads: int, k_pool: torch.Tensor, v_pool: torch.Tensor,
                           tables: torch.Tensor, lengths: torch.Tensor, block_size: int, window: int,
                           prior: tuple[int, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """One new token per row: writes its K and V (from qkv) to the pool at position lengths - 1 and returns
    its attention over the row's keys, (rows, heads * head_dim) bf16. qkv: (rows, heads + 2 kv_heads,
    head_dim) bf16, rows may be strided; k_pool, v_pool: one layer's (slots, kv_heads, head_dim) bf16
    contiguous; tables: (rows, width) int32 block tables; lengths: (rows,) int32 keys per row, the new one
    included; window: keys a query sees at most, 0 for all. prior: (first key, out, lse) when the caller
    attended every row's keys before `first key` (a shared prefix), out (kv_heads, rows, heads / kv_heads,
    head_dim) bf16 and lse (kv_heads, rows, heads / kv_heads) float32 contiguous: continued here.
    paged_attention's flash path is the reference."""
    rows, _, head_dim = qkv.shape
    assert qkv.stride(2) == 1 and qkv.stride(1) == head_dim and k_pool.is_contiguous() and v_pool.is_contiguous()
    first_key, prior_out, prior_lse = prior if prior is not None else (0, None, None)
    if prior is not None:
        assert prior_out.is_contiguous() and prior_lse.is_contiguous() and prior_lse.dtype == torch.float32
    out = torch.empty(rows, heads * head_dim, dtype=torch.bfloat16)
    _library().paged_decode_attention_bf16(
        qkv.data_ptr(), rows, qkv.stride(0), heads, kv_heads, head_dim, k_pool.data_ptr(), v_pool.data_ptr(),
        tables.data_ptr(), tables.shape[1], lengths.data_ptr(), block_size, window, first_key,
        prior_out.data_ptr() if prior is not None else None, prior_lse.data_ptr() if prior is not None else None,
        out.data_ptr(), torch.get_num_threads())
    return out


def decode_layers(decoder, h: torch.Tensor, cos_sin: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
                  tables: torch.Tensor, lengths: torch.Tensor, block_size: int) -> None:
    """A decode step's layers in place on h (rows, dim) bf16 (cpu_decode.c; native_layers.py builds `decoder`):
    cos_sin (rows, head_dim / 2, 2) float32, the pools (n_layers, slots, kv_heads, head_dim) bf16 contiguous,
    tables (rows, width), lengths (rows,) int32 and block_size as paged_decode_attention's."""
    assert k_pool.is_contiguous() and v_pool.is_contiguous() and h.is_contiguous() and cos_sin.is_contiguous()
    _library().decode_layers(decoder, h.data_ptr(), h.shape[0], cos_sin.data_ptr(), k_pool.data_ptr(),
                             v_pool.data_ptr(), k_pool.shape[1], tables.data_ptr(), tables.shape[1],
                             lengths.data_ptr(), block_size, torch.get_num_threads())


def sample_rows(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                min_p: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row (rows,) int64 from logits (rows, vocab) float32 after bias, penalties and masks:
    top-k, top-p, min-p, temperature (0: the argmax), then the token where the row's uniform falls in the
    cumulative distribution. Per-row parameters as sampling.RowParams holds them (float32, top_k int64),
    uniforms float64. sampling.sampling_distribution and sampling.draw are the reference."""
    rows, vocab = logits.shape
    threads = torch.get_num_threads()
    logits = logits.contiguous()
    out = torch.empty(rows, dtype=torch.int64)
    scratch = torch.empty(threads, vocab, dtype=torch.float32)
    params = [t.contiguous() for t in (temperature, top_k, top_p, min_p, uniforms)]
    _library().sample_rows(logits.data_ptr(), rows, vocab, *(t.data_ptr() for t in params), scratch.data_ptr(),
                           out.data_ptr(), threads)
    return out


def mask_disallowed_(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """In place: -inf where a row's packed int32 bitmask (rows, ceil(vocab / 32)) has the token's bit clear;
    logits (rows, vocab) float32 contiguous. sampling.mask_disallowed's PyTorch path is the reference."""
    assert logits.is_contiguous() and logits.dtype == torch.float32 and bitmask.dtype == torch.int32
    bitmask = bitmask.contiguous()
    _library().mask_disallowed_f32(logits.data_ptr(), logits.shape[0], logits.shape[1], bitmask.data_ptr(),
                                   bitmask.shape[1])
