"""The paged KV cache: one pool of fixed-size blocks shared by every sequence, with prefix reuse.

Each layer's keys and values live in flat slot tensors (num_blocks * block_size slots); a
sequence owns a list of block ids (its block table). A full block whose tokens and whole prefix
are known is registered under (parent entry, tokens), so a later prompt that starts the same way
shares those blocks instead of recomputing them. Shared blocks are never written again: only
full blocks are registered and new tokens always go to a sequence's own blocks.

Block 0 is a scratch block: padded positions of a batch write there and it is never handed out.
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch


class PoolExhausted(RuntimeError):
    """Not enough free blocks right now (the caller waits or rejects)."""


@dataclass
class _Entry:
    block: int
    content_id: int  # unique forever, so a stale child entry can never match a reused block


class BlockPool:
    def __init__(self, n_layers: int, num_blocks: int, block_size: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        if num_blocks < 2:
            raise ValueError(f"the KV pool needs at least 2 blocks, got {num_blocks}")
        self.block_size, self.num_blocks = block_size, num_blocks
        shape = (n_layers, num_blocks * block_size, n_kv_heads, head_dim)
        # empty, not zeros: pages are committed only once written, so an unused budget costs nothing.
        # A slot is read only after it was written, except padding, which reads the scratch block.
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.k[:, :block_size] = 0
        self.v[:, :block_size] = 0
        self._refs = [0] * num_blocks
        self._free = list(range(num_blocks - 1, 0, -1))  # pop() hands out low ids first
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced, oldest first
        self._table: dict[tuple[int, tuple[int, ...]], _Entry] = {}
        self._key_of: dict[int, tuple[int, tuple[int, ...]]] = {}  # block -> its table key
        self._content_ids = itertools.count(1)  # 0 is the root (empty prefix)
        self._lock = threading.Lock()
        self.prefix_queries = self.prefix_hits = 0  # tokens looked up and found (vLLM's prefix-cache counters)

    @property
    def usable_blocks(self) -> int:
        return self.num_blocks - 1

    def stats(self) -> dict:
        with self._lock:
            in_use = sum(1 for r in self._refs if r > 0)
            return {"kv_blocks_total": self.usable_blocks, "kv_blocks_in_use": in_use,
                    "kv_blocks_cached": len(self._evictable), "block_size": self.block_size,
                    "prefix_cache_queries": self.prefix_queries, "prefix_cache_hits": self.prefix_hits}

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold this many tokens."""
        return -(-tokens // self.block_size)

    def allocate(self, n: int) -> list[int]:
        with self._lock:
            if n > len(self._free) + len(self._evictable):
                raise PoolExhausted(f"need {n} KV blocks, {len(self._free) + len(self._evictable)} available")
            blocks = []
            for _ in range(n):
                if not self._free:
                    self._evict_oldest()
                block = self._free.pop()
                self._refs[block] = 1
                blocks.append(block)
            return blocks

    def retain(self, blocks: list[int]) -> list[int]:
        """One more reference to each block (a beam that shares its parent's blocks); returns them."""
        with self._lock:
            for block in blocks:
                self._refs[block] += 1
        return list(blocks)

    def is_shared(self, block: int) -> bool:
        """Whether someone else also holds this block (cached prefix blocks count as held by the cache)."""
        with self._lock:
            return self._refs[block] > 1 or block in self._key_of

    def copy_block(self, src: int, dst: int) -> None:
        """Copy every layer's K/V slots of block `src` into block `dst` (copy-on-write of a shared block)."""
        bs = self.block_size
        self.k[:, dst * bs:(dst + 1) * bs] = self.k[:, src * bs:(src + 1) * bs]
        self.v[:, dst * bs:(dst + 1) * bs] = self.v[:, src * bs:(src + 1) * bs]

    def release(self, blocks: list[int]) -> None:
        """Drop one reference to each block; cached ones stay reusable until evicted."""
        with self._lock:
            for block in blocks:
                self._refs[block] -= 1
                if self._refs[block] == 0:
                    if block in self._key_of:
                        self._evictable[block] = None
                    else:
                        self._free.append(block)

    def match_prefix(self, tokens: list[int]) -> tuple[list[int], list[int]]:
        """The longest run of cached full blocks that starts `tokens`: (block ids, content ids), referenced."""
        bs = self.block_size
        blocks, content_ids, parent = [], [], 0
        with self._lock:
            for start in range(0, len(tokens) - bs + 1, bs):
                entry = self._table.get((parent, tuple(tokens[start:start + bs])))
                if entry is None:
                    break
                if self._refs[entry.block] == 0:
                    self._evictable.pop(entry.block, None)
                self._refs[entry.block] += 1
                blocks.append(entry.block)
                content_ids.append(entry.content_id)
                parent = entry.content_id
            self.prefix_queries += len(tokens)
            self.prefix_hits += len(blocks) * bs
        return blocks, content_ids

    def register(self, block: int, parent_content_id: int, tokens: list[int]) -> int:
        """Publish a full, computed block; returns its content id (the parent of the next block)."""
        key = (parent_content_id, tuple(tokens))
        with self._lock:
            entry = self._table.get(key)
            if entry is not None:  # the same content was computed elsewhere first: keep theirs
                return entry.content_id
            entry = _Entry(block, next(self._content_ids))
            self._table[key] = entry
            self._key_of[block] = key
            return entry.content_id

    def clear_cache(self) -> None:
        """Forget every cached prefix (in-use blocks stay allocated)."""
        with self._lock:
            while self._evictable:
                self._evict_oldest()
            for block, key in list(self._key_of.items()):
                del self._table[key]
                del self._key_of[block]

    def _evict_oldest(self) -> None:
        block, _ = self._evictable.popitem(last=False)
        del self._table[self._key_of.pop(block)]
        self._free.append(block)
