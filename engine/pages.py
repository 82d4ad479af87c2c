"""madvise(2) for loading: fault in the mapped GGUF bytes about to be packed, drop them from the process
once packed (the page cache keeps them; so the mapping and the packed copy of a tensor are not both
resident), and hand out new buffers with their pages already in place.

Page faults are a large part of packing a 7B model (~0.5 s per GiB touched here, measured): one
MADV_POPULATE_* call (Linux 5.14+) fills the page tables without a fault per page. madvise is called
through ctypes, which lets go of the GIL (Python's mmap.madvise holds it, and a populate of 100 MiB
would stall the other loader thread). Not madvise hugepages, as numpy does for big arrays: with
defrag=madvise a fault may stall compacting memory (2 s for the first GiB here while the page cache
was full).
"""
from __future__ import annotations

import ctypes
import logging
import mmap

import numpy as np

log = logging.getLogger(__name__)

MADV_POPULATE_READ, MADV_POPULATE_WRITE = 22, 23  # linux/mman.h; Python's mmap module does not name them


def _libc_madvise():
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return madvise


_MADVISE = _libc_madvise()


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A new array (private anonymous memory, unmapped when the last view goes) with its pages faulted in."""
    count = int(np.prod(shape))
    buffer = mmap.mmap(-1, max(1, count * np.dtype(dtype).itemsize), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    array = np.frombuffer(buffer, dtype, count).reshape(shape)
    _madvise(array, MADV_POPULATE_WRITE)  # an older kernel refuses it: the pages fault in as they are written
    return array


def populate(view: np.ndarray) -> None:
    """Read the file pages under `view` and map them, in one call (a no-op for memory not mapped from a file)."""
    if _is_file_view(view):
        prefault(view)


def drop(view: np.ndarray) -> None:
    """Unmap the file pages wholly under a read-only mapped `view` from this process; reading the view
    again faults them back in from the page cache. Pages shared with neighbouring bytes are kept."""
    if _is_file_view(view):
        _madvise(view, mmap.MADV_DONTNEED, inward=True)


def drop_mapping(view: np.ndarray) -> None:
    """drop() for the whole file mapping under `view`: the kernel may map the page cache's large folios
    (2 MiB) whole, and a drop that covers part of one can leave it mapped."""
    mapping = _mapping_under(view)
    if mapping is not None and _is_file_view(view):
        drop(np.frombuffer(mapping, np.uint8))


def _is_file_view(view: np.ndarray) -> bool:
    # DONTNEED on private writable memory would discard its contents: only read-only mapped views qualify
    return view.nbytes > 0 and not view.flags.writeable and _mapping_under(view) is not None


def _madvise(view: np.ndarray, advice: int, inward: bool = False) -> bool:
    """madvise over the pages under `view`: those wholly inside it (inward), or all it touches."""
    if _MADVISE is None:
        return False
    start, page = view.__array_interface__["data"][0], mmap.PAGESIZE
    end = start + view.nbytes
    first = -(-start // page) * page if inward else start // page * page
    last = end // page * page if inward else -(-end // page) * page
    if last <= first:
        return False
    if _MADVISE(first, last - first, advice) != 0:  # advice is only advice: loading goes on without it
        log.debug("madvise(%d) failed: errno %d", advice, ctypes.get_errno())
        return False
    return True


def _mapping_under(view: np.ndarray) -> mmap.mmap | None:
    """The mmap object a numpy view (or an np.memmap's view) reads from, if any."""
    obj = view
    while obj is not None:
        if isinstance(obj, mmap.mmap):
            return obj
        inner = getattr(obj, "_mmap", None)  # np.memmap keeps its mmap here
        if isinstance(inner, mmap.mmap):
            return inner
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)  # np.frombuffer: via a memoryview
    return None


def prefault(view: np.ndarray) -> None:
    """Map every page under `view` now (from the page cache, or the disk), in one call, so that the first
    computation over it does not fault page by page."""
    if not _madvise(view, MADV_POPULATE_READ):
        _madvise(view, mmap.MADV_WILLNEED)
