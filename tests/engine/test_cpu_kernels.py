"""The native int4 and int8 kernels (kernels/cpu_matmul.c) against their references: the exact int8-activation
math in float64, PyTorch's kernels on the same weights, and themselves in other batch shapes and thread counts."""
import numpy as np
import pytest
import torch

from engine import load_model
from engine.kernels import cpu_matmul
from engine.packing import Part, pack_linear, packed_layout
from engine.quant_linear import Int8Embedding, _int4_parts

from .test_quant_linear import random_weight, relative_error

native = pytest.mark.skipif(not cpu_matmul.available(), reason="needs AVX-512 VNNI and a C compiler")
SHAPES = [("Q4_0", (64, 384)), ("Q4_1", (96, 576)), ("Q4_K", (48, 512))]


def packed(kind: str, shape: tuple[int, int], layout: str, seed: int = 0):
    data, ggml_type = random_weight(kind, shape, seed)
    return pack_linear([Part("w", ggml_type, shape, data)], layout), (data, ggml_type, shape)


def tile_codes(weight: torch.Tensor, n: int, k: int) -> np.ndarray:
    """The tiles layout read back into (n, k) codes."""
    byte = weight.numpy().reshape(n // 16, k // 8, 16, 4)  # (tile, 8 inputs, row, t)
    codes = np.stack([byte & 0x0F, byte >> 4], axis=3)  # (tile, 8 inputs, row, low/high, t)
    return codes.transpose(0, 2, 1, 3, 4).reshape(n, k)


def quantized_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x quantized per row and group of 32 as the kernels do it (float32 steps): xq (M, groups, 32), dx (M, groups, 1)."""
    M, K = x.shape
    groups = x.float().view(M, K // 32, 32)
    amax = groups.abs().amax(-1, keepdim=True)
    inverse = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros_like(amax))
    return torch.round(groups * inverse).double(), (amax / 127.0).double()  # round half to even, as vcvtps2dq


def int8_activation_reference(x: torch.Tensor, codes, scales, zeros) -> torch.Tensor:
    """What the int4 kernel computes, in float64."""
    K = x.shape[1]
    xq, dx = quantized_activations(x)
    w = (codes.double() - 8).view(codes.shape[0], K // 32, 32)  # (N, groups, 32)
    dots = torch.einsum("mgi,ngi->mng", xq, w)  # (M, N, groups): sum((q - 8) xq)
    sums = xq.sum(-1)  # (M, groups)
    y = dx.squeeze(-1)[:, None, :] * (dots * scales.double()[None] + zeros.double()[None] * sums[:, None, :])
    return y.sum(-1)


@native
@pytest.mark.parametrize("kind, shape", SHAPES)
def test_tiles_hold_the_codes_and_scales_of_the_reference_packing(kind, shape):
    layer, (data, ggml_type, _) = packed(kind, shape, "tiles")
    codes, scales, zeros = _int4_parts(data, ggml_type, shape, "w")
    n, k = shape
    assert layer.layout == "tiles" and np.array_equal(tile_codes(layer.packed_weight, n, k), codes.numpy())
    if kind == "Q4_0":  # no zeros kept: they are all 0
        assert layer.format == "int4sym" and not zeros.any()
        tile_scales = layer.scales.view(n // 16, k // 32, 16).permute(0, 2, 1).reshape(n, k // 32)
        assert torch.equal(tile_scales, scales.to(torch.bfloat16))
        return
    assert layer.format == "int4"
    pairs = layer.scales.view(n // 16, k // 32, 16, 2).permute(0, 2, 1, 3).reshape(n, k // 32, 2)
    assert torch.equal(pairs[..., 0], scales.to(torch.bfloat16)) and torch.equal(pairs[..., 1], zeros.to(torch.bfloat16))


@native
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 9, 64])
@pytest.mark.parametrize("kind, shape", SHAPES)
def test_the_kernel_computes_the_int8_activation_math(kind, shape, rows):
    layer, (data, ggml_type, _) = packed(kind, shape, "tiles")
    codes, scales, zeros = _int4_parts(data, ggml_type, shape, "w")
    x = torch.randn(rows, shape[1]).to(torch.bfloat16)
    x[0, :32] = 0  # an all-zero group: scale 0, no division by zero
    reference = int8_activation_reference(x, codes, scales.to(torch.bfloat16).float(), zeros.to(torch.bfloat16).float())
    y = layer(x).double()
    assert ((y - reference).abs() <= reference.abs() * 2**-7 + 1e-6).all()  # within the output's bf16 rounding


@native
@pytest.mark.parametrize("kind, shape", SHAPES)
def test_native_and_pytorch_kernels_agree_on_the_same_weights(kind, shape):
    tiles, _ = packed(kind, shape, "tiles")
    reference, _ = packed(kind, shape, "torch")
    x = torch.randn(7, shape[1]).to(torch.bfloat16)
    assert relative_error(tiles(x), reference(x)) < 1.5e-2  # int8 activations against bf16 ones


@native
@pytest.mark.parametrize("rows", [1, 4, 6, 64])
@pytest.mark.parametrize("kind", ["Q8_0", "Q6_K"])
def test_the_int8_kernel_computes_the_int8_activation_math_and_agrees_with_pytorchs(kind, rows):
    shape = (48, 512)
    tiles, _ = packed(kind, shape, "tiles")
    reference = packed(kind, shape, "torch")[0]
    assert tiles.format == reference.format == "int8" and tiles.layout == "tiles"
    codes = reference.packed_weight[:, :shape[1]].double()  # the same int8 codes and scales
    assert torch.equal(tiles.scales, reference.scales)
    x = torch.randn(rows, shape[1]).to(torch.bfloat16)
    xq, dx = quantized_activations(x)
    exact = torch.einsum("mgi,ngi->mng", xq, codes.view(shape[0], -1, 32)) * dx.squeeze(-1)[:, None, :]
    exact = exact.sum(-1) * reference.scales.double()
    y = tiles(x).double()
    assert ((y - exact).abs() <= exact.abs() * 2**-7 + 1e-6).all()
    assert relative_error(tiles(x), reference(x)) < 1.5e-2


@native
def test_a_tiled_int8_table_looks_up_the_same_embeddings():
    tiles, _ = packed("Q8_0", (64, 96), "tiles")
    reference, _ = packed("Q8_0", (64, 96), "torch")
    ids = torch.tensor([[0, 17, 63], [5, 5, 31]])
    assert torch.equal(Int8Embedding(tiles)(ids), Int8Embedding(reference)(ids))


@native
@pytest.mark.parametrize("kind", ["Q4_K", "Q8_0"])
def test_a_row_comes_out_the_same_alone_in_any_batch_and_on_any_thread_count(kind):
    layer, _ = packed(kind, (256, 1024), "tiles")
    x = torch.randn(64, 1024).to(torch.bfloat16)
    threads = torch.get_num_threads()
    try:
        batch = layer(x)
        torch.set_num_threads(1)
        single_thread = layer(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(batch, single_thread)
    for row in (0, 5, 63):
        assert torch.equal(layer(x[row:row + 1]), batch[row:row + 1])
        assert torch.equal(layer(x[row:row + 3]), batch[row:row + 3])


@native
def test_models_load_on_the_native_kernel_unless_told_otherwise(default_gguf):
    native_engine = load_model(default_gguf, device="cpu")
    torch_engine = load_model(default_gguf, device="cpu", kernels="torch")
    assert native_engine.info["kernels"] == "native" and torch_engine.info["kernels"] == "torch"
    assert native_engine.model.output.layout == "tiles"  # the tied int8 head too
    ids = native_engine.tokenizer.encode("The capital of France is Paris. The capital of Italy is")
    a, b = native_engine.logits(ids), torch_engine.logits(ids)
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9
    with pytest.raises(ValueError, match="kernels 'fast' is not one of"):
        load_model(default_gguf, device="cpu", kernels="fast")
    native_engine.close()
    torch_engine.close()


def test_without_the_instructions_auto_falls_back_and_native_says_why(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "cpu_supports", lambda: False)
    cpu_matmul._library.cache_clear()
    try:
        assert not cpu_matmul.available() and packed_layout("auto") == "torch"
        with pytest.raises(ValueError, match="AVX-512 VNNI"):
            packed_layout("native")
    finally:
        cpu_matmul._library.cache_clear()


@native
@pytest.mark.parametrize("kind, shape", [*SHAPES, ("Q4_K", (32, 11008))])
def test_the_compiled_tile_packer_equals_the_numpy_one(kind, shape):
    from engine.int4_pack import Q4_FORMATS, pack_int4_tiles

    data, _ = random_weight(kind, shape)
    rows = np.asarray(data).reshape(shape[0], -1).view(np.uint8)
    fmt = Q4_FORMATS[kind]
    ours, reference = np.empty((shape[0], shape[1] // 2), np.uint8), np.empty((shape[0], shape[1] // 2), np.uint8)
    cpu_matmul.pack_q4_tiles(np.ascontiguousarray(rows), fmt.block_values, fmt.block_bytes, fmt.codes_at, fmt.run, ours, 2)
    pack_int4_tiles(rows, fmt, reference)
    assert np.array_equal(ours, reference)


def test_the_library_is_never_taken_from_a_folder_others_can_write(tmp_path):
    shared = tmp_path / "kernels"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # as another user's planted folder in /tmp would be
    assert cpu_matmul._private_folder(shared) != shared
    own = tmp_path / "own"
    assert cpu_matmul._private_folder(own) == own and own.stat().st_mode & 0o777 == 0o700


@native
@pytest.mark.parametrize("rows", [1, 3, 64])
def test_the_native_rms_norm_equals_pytorchs_within_bf16_rounding(rows):
    from engine.model import RMSNorm

    norm = RMSNorm(576, 1e-5).to(torch.bfloat16)
    norm.weight.data = torch.randn(576).to(torch.bfloat16)
    x = (torch.randn(rows, 2, 576) * 3).to(torch.bfloat16)
    reference = norm(x)
    norm.native = True
    ours = norm(x)
    assert ours.dtype == torch.bfloat16 and ours.shape == x.shape
    assert ((ours.float() - reference.float()).abs() <= reference.float().abs() * 2**-7 + 1e-6).all()
    assert torch.equal(norm(x[:1]), ours[:1])  # a row does not depend on its batch


@native
@pytest.mark.parametrize("layout", ["norm", "neox"])
def test_the_native_rope_equals_the_reference_within_bf16_rounding(layout):
    from engine.rope import apply_rotary_emb

    B, T, heads, kv, head_dim = 3, 5, 6, 2, 64
    qkv = torch.randn(B, T, heads + kv, head_dim).to(torch.bfloat16)
    angles = torch.rand(B, T, head_dim // 2) * 6
    freqs = torch.stack([angles.cos(), angles.sin()], dim=-1)
    reference = apply_rotary_emb(qkv[:, :, :heads], freqs, layout)
    ours = qkv.clone()
    cpu_matmul.rope_(ours, heads, freqs, layout)
    assert ((ours[:, :, :heads].float() - reference.float()).abs() <= reference.float().abs() * 2**-7 + 1e-6).all()
    assert torch.equal(ours[:, :, heads:], qkv[:, :, heads:])  # v untouched
