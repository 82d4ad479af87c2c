"""Packed (int4/int8) linear layers = the dequantized matmul within tolerance; a packed model = the dense one."""
import numpy as np
import pytest
import torch

from engine.dequant import dequantize
from engine.gguf_file import GGUFFile
from engine.loader import build_transformer, model_args, resident_bytes
from engine.packing import Part, pack_linear
from engine.quant_linear import PackedLinear, int4_linear, int8_linear

from .forward import full_forward, incremental_forward
from .tiny_gguf import _encode_weight, write_tiny_llama

# Output error relative to the output's norm. Every path rounds x and the output to bf16, which
# alone gives ~0.003 here (measured: the dense bf16 matmul x.bf16() @ W.bf16().T).
# int4 keeps the GGUF codes exactly and rounds only the group scale and zero to bf16, so it must
# stay within 1.5x of the dense bf16 error. int8 requantizes each row with one scale,
# max|w_row| / 127: a uniform rounding error of ~0.0075 of the weights' RMS for Gaussian rows of
# 512; 0.015 allows 2x that.
INT4_VS_DENSE_BF16 = 1.5
INT8_TOLERANCE = 0.015
FORMAT_OF = {"Q4_0": "int4", "Q4_1": "int4", "Q4_K": "int4", "Q8_0": "int8", "Q6_K": "int8", "Q5_0": "int8",
             "Q5_1": "int8", "Q3_K": "int8", "F16": "int8", "F32": "int8"}


def random_weight(type_name: str, shape: tuple[int, int], seed: int = 0):
    """Raw GGUF data of a random (out, in) weight and its type id."""
    rng = np.random.default_rng(seed)
    data, kind = _encode_weight(rng.standard_normal(shape).astype(np.float32) * 0.05, type_name, rng)
    return data, int(kind)


def packed_linear(data, kind: int, shape: tuple[int, int]) -> PackedLinear:
    return pack_linear([Part("weight", kind, shape, data)])


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return ((y.double() - reference.double()).norm() / reference.double().norm()).item()


@pytest.mark.parametrize("type_name", list(FORMAT_OF))
def test_packed_matmul_matches_dequantized_matmul(type_name):
    shape = (96, 512)
    data, kind = random_weight(type_name, shape)
    w = dequantize(data, kind, shape)
    layer = packed_linear(data, kind, shape)
    x = torch.randn(2, 7, shape[1], generator=torch.Generator().manual_seed(1))  # leading dims (B, T)
    y = layer(x)
    assert layer.format == FORMAT_OF[type_name] and y.dtype == x.dtype and y.shape == (2, 7, shape[0])
    reference = x.double() @ w.double().T
    error = relative_error(y, reference)
    if layer.format == "int4":
        assert error < INT4_VS_DENSE_BF16 * relative_error(x.bfloat16() @ w.bfloat16().T, reference)
    else:
        assert error < INT8_TOLERANCE


def test_int4_formula_and_group_layout():
    """w = (q - 8) * scale + zero, with group g covering columns 32g..32g+31 of each row."""
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (32, 128), generator=g)
    scales, zeros = torch.rand(32, 4, generator=g) + 0.5, torch.randn(32, 4, generator=g)
    layer = int4_linear(codes, scales, zeros)
    expected = ((codes - 8) * scales.bfloat16().float().repeat_interleave(32, 1)
                + zeros.bfloat16().float().repeat_interleave(32, 1))
    effective = layer(torch.eye(128, dtype=torch.bfloat16)).float().T  # (out, in): each weight, bf16-rounded
    torch.testing.assert_close(effective, expected, rtol=2**-8, atol=0)


def test_shapes_the_int4_kernel_cannot_take_fall_back_to_int8():
    data, kind = random_weight("Q4_0", (40, 64))  # out_features not a multiple of 16
    assert packed_linear(data, kind, (40, 64)).format == "int8"
    w = torch.randn(24, 40)  # in_features not a multiple of 16: int8 pads it
    layer = int8_linear(w)
    x = torch.randn(3, 40)
    assert relative_error(layer(x), x @ w.T) < INT8_TOLERANCE
    assert "format=int8" in repr(layer) and layer.nbytes == 24 * 48 + 24 * 2


@pytest.fixture(scope="module")
def q4_1_model_file(tiny_gguf_factory):
    return GGUFFile(tiny_gguf_factory("Q4_1"))


def build(gguf: GGUFFile, dtype=torch.bfloat16, weights="dense"):
    return build_transformer(gguf, model_args(gguf), torch.device("cpu"), dtype, weights=weights)


@torch.inference_mode()
def test_packed_model_agrees_with_dense_bf16_and_is_smaller(q4_1_model_file):
    packed, dense = build(q4_1_model_file, weights="packed"), build(q4_1_model_file)
    linears = [m for m in packed.modules() if isinstance(m, PackedLinear)]
    # per layer q|k|v and gate|up are fused: wqkv, wo, w13, w2; plus the head
    assert len(linears) == 4 * packed.args.n_layers + 1 and all(m.format == "int4" for m in linears)
    assert all(layer.attention.wqkv is not None and layer.feed_forward.w13 is not None for layer in packed.layers)
    assert packed.tok_embeddings(torch.tensor([0])).dtype == torch.bfloat16
    tokens = torch.randint(0, packed.args.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    ours, theirs = full_forward(packed, tokens), full_forward(dense, tokens)
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.9
    assert relative_error(ours, theirs) < 0.05
    assert resident_bytes(packed) < 0.25 * resident_bytes(build(q4_1_model_file, torch.float32))


@torch.inference_mode()
def test_packed_cached_decode_equals_full_forward(q4_1_model_file):
    model = build(q4_1_model_file, weights="packed")
    tokens = torch.randint(0, model.args.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    full = full_forward(model, tokens)
    steps = incremental_forward(model, tokens, prefix=1)
    assert relative_error(steps, full) < 0.02


@torch.inference_mode()
def test_tied_output_and_embeddings_share_one_int8_table(tmp_path, spm_vocab):
    gguf = GGUFFile(write_tiny_llama(tmp_path / "tied.gguf", spm_vocab, "Q8_0", tied=True))
    model = build(gguf, weights="packed")
    assert model.output.packed_weight is model.tok_embeddings.codes
    assert all(m.format == "int8" for m in model.modules() if isinstance(m, PackedLinear))
    tokens = torch.randint(0, model.args.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    ours, theirs = full_forward(model, tokens), full_forward(build(gguf), tokens)
    assert relative_error(ours, theirs) < 0.05


def test_packed_weights_refuse_float32_cuda_numerics_and_unknown_layouts(q4_1_model_file):
    gguf, args = q4_1_model_file, model_args(q4_1_model_file)
    with pytest.raises(ValueError, match="weights='packed' computes in bfloat16.*got float32"):
        build(gguf, torch.float32, weights="packed")
    with pytest.raises(ValueError, match="use device 'cpu'"):
        build_transformer(gguf, args, torch.device("cuda"), torch.bfloat16, weights="packed")
    with pytest.raises(ValueError, match="llama_cpp_numerics"):
        build_transformer(gguf, args, torch.device("cpu"), torch.bfloat16, llama_cpp_numerics=True, weights="packed")
    with pytest.raises(ValueError, match="weights 'int4' is not supported"):
        build(gguf, weights="int4")



@pytest.mark.parametrize("weight_type", ["Q4_0", "Q8_0"])
@torch.inference_mode()
def test_fused_linear_equals_its_parts(tiny_gguf_factory, weight_type):
    """q|k|v in one matmul gives each part's own output (int4 codes exact; int8 scales are per row)."""
    gguf = GGUFFile(tiny_gguf_factory(weight_type))
    names = ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"]
    parts = [Part(n, gguf.tensors[n].ggml_type, gguf.tensors[n].shape, gguf.tensors[n].data) for n in names]
    fused = pack_linear(parts)
    x = torch.randn(3, parts[0].shape[1], dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    separate = torch.cat([pack_linear([part])(x) for part in parts], dim=-1)
    torch.testing.assert_close(fused(x), separate, rtol=0, atol=0)
