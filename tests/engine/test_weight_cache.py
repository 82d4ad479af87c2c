"""The packed-weight cache: a second load maps what the first packed, bit for bit, and nothing stale is used."""
import json
import os

import numpy as np
import pytest
import torch

from engine import WeightCache, load_model, packing
from engine.quant_linear import PackedLinear
from engine.weight_cache import ArraySpec

from .tiny_gguf import write_tiny_llama


def packed_layers(engine) -> dict[str, PackedLinear]:
    return {name: m for name, m in engine.model.named_modules() if isinstance(m, PackedLinear)}


def load(path, cache=None):
    engine = load_model(path, device="cpu", dtype="bfloat16", weight_cache=cache)
    if engine.weight_cache is not None:
        engine.weight_cache.wait()  # the entry is written in the background
    return engine


def no_packing(monkeypatch):
    def fail(jobs):
        raise AssertionError("packed although the cache holds this file")
    monkeypatch.setattr(packing, "_run_all", fail)


@pytest.fixture
def q4k_file(tmp_path, spm_vocab):
    """An untied Q4_K file (int4 layers, an int8 head, embeddings read from the file)."""
    return write_tiny_llama(tmp_path / "model.gguf", spm_vocab, "Q4_K")


@pytest.mark.parametrize("which", ["default", "q4k"])
def test_a_second_load_maps_the_first_loads_packing_bit_for_bit(which, default_gguf, q4k_file, tmp_path, monkeypatch):
    path = default_gguf if which == "default" else q4k_file
    cache = tmp_path / "cache"
    packed = load(path)
    first = load(path, cache)
    assert len(WeightCache(cache).entries_of(path)) == 1
    no_packing(monkeypatch)
    mapped = load(path, cache)
    reference, layers = packed_layers(packed), packed_layers(mapped)
    assert reference.keys() == layers.keys() and len(layers) > 0
    for name, layer in layers.items():
        assert torch.equal(layer.packed_weight, reference[name].packed_weight), name
        assert torch.equal(layer.scales.view(torch.int16), reference[name].scales.view(torch.int16)), name
    ids = packed.tokenizer.encode("The capital of France is")
    assert torch.equal(mapped.logits(ids), packed.logits(ids))
    assert mapped.generate("Once upon a time", max_tokens=8)[0].text == first.generate("Once upon a time", max_tokens=8)[0].text
    for engine in (packed, first, mapped):
        engine.close()


def test_a_changed_file_is_packed_again_and_its_old_entry_goes(tmp_path, spm_vocab, monkeypatch):
    path, cache = tmp_path / "model.gguf", tmp_path / "cache"
    write_tiny_llama(path, spm_vocab, "Q4_0", seed=1)
    load(path, cache).close()
    old = WeightCache(cache).entries_of(path)
    write_tiny_llama(path, spm_vocab, "Q4_0", seed=2)  # same name and size, other weights
    engine = load(path, cache)
    entries = WeightCache(cache).entries_of(path)
    assert len(entries) == 1 and entries[0]["key"] != old[0]["key"]
    fresh = load(path)
    ids = fresh.tokenizer.encode("Hello there")
    assert torch.equal(engine.logits(ids), fresh.logits(ids))
    engine.close()
    fresh.close()


@pytest.mark.parametrize("damage", ["truncated data", "other shapes", "manifest not JSON"])
def test_a_damaged_entry_is_packed_again(damage, q4k_file, tmp_path):
    cache = tmp_path / "cache"
    load(q4k_file, cache).close()
    entry = WeightCache(cache).entries_of(q4k_file)[0]
    data, manifest = cache / f"{entry['key']}.bin", cache / f"{entry['key']}.json"
    if damage == "truncated data":
        os.truncate(data, data.stat().st_size - 64)
    elif damage == "other shapes":
        doc = json.loads(manifest.read_text())
        doc["arrays"][0][1][0] += 1
        manifest.write_text(json.dumps(doc))
    else:
        manifest.write_text("{")
    engine, fresh = load(q4k_file, cache), load(q4k_file)
    ids = fresh.tokenizer.encode("Hello there")
    assert torch.equal(engine.logits(ids), fresh.logits(ids))
    assert WeightCache(cache).entries_of(q4k_file)[0]["bytes"] == entry["bytes"]  # written anew, whole
    engine.close()
    fresh.close()


def test_nothing_is_cached_when_the_disk_would_be_left_nearly_full(q4k_file, tmp_path, monkeypatch, caplog):
    from engine import weight_cache

    monkeypatch.setattr(weight_cache.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 10 << 20})())
    load(q4k_file, tmp_path / "cache").close()
    assert WeightCache(tmp_path / "cache").entries() == []
    assert "not caching packed weights" in caplog.text


def fake_entry(cache: WeightCache, name: str, nbytes: int, source) -> str:
    spec = ArraySpec.of(f"{name}.w", (nbytes,), np.uint8)
    key = f"{name}-0"
    writer = cache.create(key, [spec], source)
    writer.start({spec.name: np.full(nbytes, 7, np.uint8)})
    writer.thread.join()
    return key


def test_past_the_budget_the_least_recently_used_entries_go(tmp_path):
    cache = WeightCache(tmp_path / "cache", budget_bytes=3000)
    keys = [fake_entry(cache, f"m{i}", 1000, tmp_path / f"m{i}.gguf") for i in range(3)]
    past = 1_000_000
    for i, key in enumerate(keys):  # m0 used last, m1 longest ago
        os.utime(cache.folder / f"{key}.json", (past + [2, 0, 1][i], past + [2, 0, 1][i]))
    fake_entry(cache, "m3", 1000, tmp_path / "m3.gguf")
    assert sorted(e["key"] for e in cache.entries()) == ["m0-0", "m2-0", "m3-0"]
    assert cache.clear() == 3000 and cache.entries() == []


def test_unfinished_writes_of_processes_that_are_gone_are_swept(tmp_path):
    cache = WeightCache(tmp_path / "cache")
    cache.folder.mkdir()
    gone, alive = cache.folder / "m-1.999999999.tmp", cache.folder / f"m-2.{os.getpid()}.tmp"
    gone.write_bytes(b"x")
    alive.write_bytes(b"x")
    fake_entry(cache, "n", 10, tmp_path / "n.gguf")
    assert not gone.exists() and alive.exists()
