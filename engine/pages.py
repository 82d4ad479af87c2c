"""madvise(2) for loading: fault in the mapped GGUF bytes about to be packed, drop them from the process
once packed (the page cache keeps them; so the mapping and the packed copy of a tensor are not both
resident), and hand out new buffers with their pages already in place.

Page faults are a large part of packing a 7B model (~0.5 s per GiB touched here, measured): one
MADV_POPULATE_* call (Linux 5.14+) fills the page tables without a fault per page. Not madvise
hugepages, as numpy does for big arrays: with defrag=madvise a fault may stall compacting memory
(2 s for the first GiB on this machine while the page cache was full).
"""
from __future__ import annotations

import logging
import mmap

import numpy as np

log = logging.getLogger(__name__)

MADV_POPULATE_READ, MADV_POPULATE_WRITE = 22, 23  # linux/mman.h; Python's mmap module does not name them


def empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A new array (private anonymous memory, unmapped when the last view goes) with its pages faulted in."""
    dtype = np.dtype(dtype)
    nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
    buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buffer.madvise(MADV_POPULATE_WRITE)
    except OSError:  # an older kernel: the pages fault in as they are written
        pass
    return np.frombuffer(buffer, dtype, int(np.prod(shape))).reshape(shape)


def populate(view: np.ndarray) -> None:
    """Read the file pages under `view` and map them, in one call (a no-op for memory not mapped from a file)."""
    if not _advise(view, MADV_POPULATE_READ, inward=False):
        _advise(view, mmap.MADV_WILLNEED, inward=False)


def drop(view: np.ndarray) -> None:
    """Unmap the file pages wholly under a read-only mapped `view` from this process; reading the view
    again faults them back in from the page cache. Pages shared with neighbouring bytes are kept."""
    _advise(view, mmap.MADV_DONTNEED, inward=True)


def drop_mapping(view: np.ndarray) -> None:
    """drop() for the whole file mapping under `view`: the kernel may map the page cache's large folios
    (2 MiB) whole, and a drop that covers part of one can leave it mapped."""
    mapping = _mapping_under(view)
    if mapping is not None and not view.flags.writeable:
        _advise(np.frombuffer(mapping, np.uint8), mmap.MADV_DONTNEED, inward=True)


def _advise(view: np.ndarray, advice: int, inward: bool) -> bool:
    mapping = _mapping_under(view)
    if mapping is None or view.flags.writeable or view.nbytes == 0:
        return False  # DONTNEED on private writable memory would discard its contents: only read-only file maps
    base = np.frombuffer(mapping, np.uint8)
    start = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    del base  # a live export would keep the mapping from being closed
    end, page = start + view.nbytes, mmap.PAGESIZE
    first = -(-start // page) * page if inward else start // page * page
    last = end // page * page if inward else min(-(-end // page) * page, len(mapping))
    if last <= first:
        return False
    try:
        mapping.madvise(advice, first, last - first)
    except (OSError, ValueError) as exc:  # advice is only advice: loading goes on without it
        log.debug("madvise(%d) failed: %s", advice, exc)
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
