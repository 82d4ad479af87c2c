"""The fast packers (numpy, from GGUF bytes) = the torch reference (quant_linear) bit for bit; page handling."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import pages
from engine.dequant import dequantize
from engine.gguf_file import GGUFFile
from engine.int4_pack import Int4Layout, cpu_int4_layout
from engine.int4_scales import bf16_bits
from engine.packing import Part, pack_linear
from engine.quant_linear import GGUFEmbedding, reference_packed_linear

from .test_quant_linear import random_weight

ROOT = Path(__file__).resolve().parents[2]


def random_part(kind: str, shape: tuple[int, int], seed: int = 0, name: str = "w") -> Part:
    data, ggml_type = random_weight(kind, shape, seed)
    return Part(name, ggml_type, shape, data)


def assert_same_packing(parts: list[Part]):
    ours = pack_linear(parts)
    reference = reference_packed_linear([(p.data, p.ggml_type, p.shape, p.name) for p in parts])
    assert ours.format == reference.format
    assert ours.packed_weight.dtype == reference.packed_weight.dtype
    assert ours.scales.dtype == reference.scales.dtype == torch.bfloat16
    assert torch.equal(ours.packed_weight, reference.packed_weight)
    assert torch.equal(ours.scales.view(torch.int16), reference.scales.view(torch.int16))
    return ours


# rows: whole 64-row blocks, a 16/32/48-row tail, a tail alone; K: 8-byte rows and rows that are not
@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q4_K"])
@pytest.mark.parametrize("rows", [64, 112, 80, 16, 1376])
def test_int4_packer_equals_the_torch_op_bit_for_bit(kind, rows):
    in_features = 512 if kind == "Q4_K" else 384
    assert assert_same_packing([random_part(kind, (rows, in_features))]).format == "int4"


@pytest.mark.parametrize("kind, in_features", [("Q4_0", 32), ("Q4_0", 96), ("Q4_1", 32), ("Q4_K", 256)])
def test_int4_rows_of_odd_byte_lengths_are_staged_and_still_exact(kind, in_features):
    assert_same_packing([random_part(kind, (48, in_features))])


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_K"])
def test_fused_int4_parts_equal_the_reference_fusion(kind):
    k = 256
    aligned = [random_part(kind, (128, k), 1), random_part(kind, (64, k), 2), random_part(kind, (64, k), 3)]
    assert_same_packing(aligned)
    ragged = [random_part(kind, (48, k), 1), random_part(kind, (32, k), 2)]  # 48 rows: not whole blocks
    assert not pack_linear_job(ragged).in_numpy()
    assert_same_packing(ragged)  # packed by the reference itself


def pack_linear_job(parts):
    from engine.packing import Job, weight_format

    return Job("w", parts, weight_format(parts))


@pytest.mark.parametrize("kind", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "Q5_K", "Q3_K"])
def test_int8_rows_equal_the_reference_bit_for_bit(kind):
    shape = (40, 256)  # 40 rows: int4 cannot take them, so Q4 types go to int8 too
    if kind == "BF16":
        values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        part = Part("w", 30, shape, torch.from_numpy(values).bfloat16().view(torch.int16).numpy())
    else:
        part = random_part(kind, shape)
    assert assert_same_packing([part]).format == "int8"


def test_int8_pads_columns_and_fuses_rows():
    assert_same_packing([random_part("F32", (24, 40))])  # K padded to 48
    assert_same_packing([random_part("Q8_0", (64, 256), 1), random_part("Q6_K", (32, 256), 2)])


def test_layout_probe_finds_this_build_and_the_others(tmp_path):
    """The probe picks the layout the op writes; under each CPU capability the packer still equals the op."""
    assert cpu_int4_layout() in (Int4Layout(64, True), Int4Layout(32, True), Int4Layout(32, False))
    script = textwrap.dedent("""
        import torch
        from engine.int4_pack import cpu_int4_layout
        from tests.engine.test_packing import assert_same_packing, random_part
        print(torch.backends.cpu.get_cpu_capability(), cpu_int4_layout())
        assert_same_packing([random_part("Q4_0", (112, 256))])
        assert_same_packing([random_part("Q4_K", (80, 256))])
    """)
    expected = {"default": "Int4Layout(block_rows=32, halves=False)", "avx2": "Int4Layout(block_rows=32, halves=True)"}
    for capability, layout in expected.items():
        env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        if capability.upper() in done.stdout.upper().split()[0]:  # a CPU without AVX2 runs the default code
            assert layout in done.stdout


def test_bf16_bits_round_as_torch_does():
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * np.float32(1e3)
    x = np.concatenate([x, np.array([np.inf, -np.inf, 0.0, -0.0, 1e-45, 3.4e38, 1.5, 2.5], np.float32)])
    expected = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(bf16_bits(x).astype(np.uint16), expected)


def rss_file_kib() -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith("RssFile")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_dropping_packed_pages_shrinks_the_resident_set_and_keeps_the_data(tiny_gguf_factory):
    info = GGUFFile(tiny_gguf_factory("F32")).tensors["token_embd.weight"]  # 400 x 256 float32: 100 pages
    checksum = float(info.data.sum())
    before = rss_file_kib()
    pages.drop(info.data)
    assert rss_file_kib() < before - 200  # KiB
    assert float(info.data.sum()) == checksum  # faulted back in from the page cache
    writable = np.ones(1 << 20, np.uint8)
    pages.drop(writable)  # not a file mapping: left alone
    assert writable.all()


def test_new_buffers_are_zeroed_writable_and_shaped():
    a = pages.empty((3, 5), np.int16)
    assert a.shape == (3, 5) and a.dtype == np.int16 and a.flags.writeable and not a.any()
    a[1, 2] = 7
    assert torch.from_numpy(a)[1, 2] == 7


def test_embeddings_read_from_the_mapped_file_equal_dequantized_rows(tiny_gguf_factory):
    info = GGUFFile(tiny_gguf_factory("Q4_K")).tensors["token_embd.weight"]
    embedding = GGUFEmbedding(info.data, info.ggml_type, info.shape[1])
    ids = torch.tensor([[3, 0, 399], [7, 7, 1]])
    table = dequantize(info.data, info.ggml_type, info.shape)
    assert torch.equal(embedding(ids), table[ids].bfloat16())
    assert "memory-mapped" in repr(embedding)
