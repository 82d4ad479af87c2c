"""The paged KV pool alone: reference counts, prefix publishing and matching, LRU eviction, clearing."""
import pytest
import torch

from engine.kv_pool import BlockPool, PoolExhausted

BS = 4


def pool(blocks: int = 6) -> BlockPool:
    return BlockPool(n_layers=2, num_blocks=blocks, block_size=BS, n_kv_heads=1, head_dim=2,
                     dtype=torch.float32, device=torch.device("cpu"))


def publish(p: BlockPool, blocks: list[int], tokens: list[int]) -> list[int]:
    """Register each full block of `tokens` in order, as the scheduler does; returns content ids."""
    ids, parent = [], 0
    for i, block in enumerate(blocks):
        parent = p.register(block, parent, tokens[i * BS:(i + 1) * BS])
        ids.append(parent)
    return ids


def test_allocate_and_release_count_references():
    p = pool(4)  # block 0 is scratch: 3 usable
    assert p.usable_blocks == 3
    blocks = p.allocate(3)
    assert 0 not in blocks and sorted(blocks) == [1, 2, 3]
    assert p.stats()["kv_blocks_in_use"] == 3
    with pytest.raises(PoolExhausted):
        p.allocate(1)
    p.retain(blocks[:1])
    p.release(blocks)
    assert p.stats()["kv_blocks_in_use"] == 1  # the retained one is still held
    p.release(blocks[:1])
    assert p.stats()["kv_blocks_in_use"] == 0 and len(p.allocate(3)) == 3


def test_published_prefix_is_matched_and_referenced():
    p = pool()
    tokens = list(range(10))
    blocks = p.allocate(3)
    content = publish(p, blocks[:2], tokens)  # two full blocks; the third is partial, never published
    p.release(blocks)
    assert p.stats()["kv_blocks_cached"] == 2 and p.stats()["kv_blocks_in_use"] == 0
    matched, ids = p.match_prefix(tokens[:8] + [99])
    assert matched == blocks[:2] and ids == content
    assert p.stats()["kv_blocks_in_use"] == 2 and p.stats()["kv_blocks_cached"] == 0
    other, _ = p.match_prefix([0, 1, 2, 3, 7, 7, 7, 7])  # same first block, different second
    assert other == blocks[:1]


def test_a_block_is_only_matched_under_its_own_parent():
    p = pool()
    blocks = p.allocate(2)
    publish(p, blocks, [1, 2, 3, 4, 5, 6, 7, 8])
    p.release(blocks)
    assert p.match_prefix([9, 9, 9, 9, 5, 6, 7, 8]) == ([], [])


def test_publishing_the_same_prefix_twice_keeps_the_first():
    p = pool()
    first, second = p.allocate(1), p.allocate(1)
    tokens = [1, 2, 3, 4]
    assert publish(p, first, tokens) == publish(p, second, tokens)
    p.release(first + second)
    # the duplicate was never cached: it went straight back to the free list
    assert p.stats()["kv_blocks_cached"] == 1
    assert p.match_prefix(tokens)[0] == first


def test_cached_blocks_are_evicted_least_recently_used_first():
    p = pool(4)  # 3 usable
    a, b = p.allocate(1), p.allocate(1)
    publish(p, a, [1, 1, 1, 1])
    publish(p, b, [2, 2, 2, 2])
    p.release(a)
    p.release(b)  # a became evictable first
    fresh = p.allocate(2)  # one free block, then the oldest cached: a
    assert a[0] in fresh and b[0] not in fresh
    assert p.match_prefix([1, 1, 1, 1]) == ([], [])
    assert p.match_prefix([2, 2, 2, 2])[0] == b


def test_matching_a_cached_block_protects_it_from_eviction():
    p = pool(3)  # 2 usable
    a = p.allocate(1)
    publish(p, a, [5, 5, 5, 5])
    p.release(a)
    held, _ = p.match_prefix([5, 5, 5, 5, 6])
    assert held == a
    with pytest.raises(PoolExhausted):
        p.allocate(2)
    assert p.allocate(1) != a


def test_clear_cache_forgets_prefixes_but_keeps_blocks_in_use():
    p = pool()
    in_use, idle = p.allocate(1), p.allocate(1)
    publish(p, in_use, [1, 2, 3, 4])
    publish(p, idle, [9, 9, 9, 9])
    p.release(idle)
    p.clear_cache()
    assert p.stats()["kv_blocks_cached"] == 0 and p.stats()["kv_blocks_in_use"] == 1
    assert p.match_prefix([1, 2, 3, 4]) == ([], [])
    p.release(in_use)
    assert p.stats()["kv_blocks_in_use"] == 0 and len(p.allocate(p.usable_blocks)) == p.usable_blocks


def test_shared_blocks_are_copied_before_a_write():
    p = pool()
    block = p.allocate(1)[0]
    p.k[:, block * BS:(block + 1) * BS] = 3.0
    assert not p.is_shared(block)
    p.retain([block])
    assert p.is_shared(block)
    copy = p.allocate(1)[0]
    p.copy_block(block, copy)
    assert torch.equal(p.k[:, copy * BS:(copy + 1) * BS], p.k[:, block * BS:(block + 1) * BS])
    publish(p, [copy], [1, 2, 3, 4])
    assert p.is_shared(copy)  # a cached block is held by the cache: never written in place
