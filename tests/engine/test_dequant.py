"""Our PyTorch dequantization is bit-exact against gguf's reference decoder on random blocks."""
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from engine.dequant import GGML_TYPES, UnsupportedTensorType, dequantize

QUANT_TYPES = [name for name, block, _ in GGML_TYPES.values()]


def random_blocks(type_name: str, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes with every fp16 scale field replaced by a finite, sane value."""
    _, block_elems, block_bytes = next(v for v in GGML_TYPES.values() if v[0] == type_name)
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    if type_name == "F32":
        return rng.standard_normal(n_blocks).astype(np.float32).view(np.uint8).reshape(n_blocks, 4)
    if type_name in ("F16", "BF16"):
        values = rng.standard_normal(n_blocks).astype(np.float32)
        if type_name == "F16":
            return values.astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
        return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(n_blocks, 2)
    for offset in SCALE_OFFSETS[type_name]:
        scales = (rng.random(n_blocks) * 0.1 + 1e-3).astype(np.float16)
        raw[:, offset:offset + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw


SCALE_OFFSETS = {"Q8_0": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2],
                 "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}


@pytest.mark.parametrize("type_name", QUANT_TYPES)
def test_bit_exact_against_gguf_reference(type_name):
    rng = np.random.default_rng(0)
    qtype = GGMLQuantizationType[type_name]
    _, block_elems, _ = next(v for v in GGML_TYPES.values() if v[0] == type_name)
    n_blocks = 64 if block_elems > 1 else 4096
    raw = random_blocks(type_name, n_blocks, rng)
    rows = 4
    shape = (rows, n_blocks * block_elems // rows)
    expected = quants.dequantize(raw.reshape(rows, -1), qtype).astype(np.float32)
    ours = dequantize(raw, int(qtype), shape, name="w")
    assert ours.dtype == torch.float32 and tuple(ours.shape) == shape
    assert np.isfinite(expected).all()
    np.testing.assert_array_equal(ours.numpy().view(np.uint32), expected.reshape(shape).view(np.uint32))


def test_unsupported_type_names_tensor_and_type():
    with pytest.raises(UnsupportedTensorType, match=r"'blk.0.attn_q.weight' has type IQ2_XXS"):
        dequantize(np.zeros(66, np.uint8), int(GGMLQuantizationType.IQ2_XXS), (256,), name="blk.0.attn_q.weight")


def test_wrong_byte_count_is_reported():
    with pytest.raises(ValueError, match="do not hold"):
        dequantize(np.zeros(10, np.uint8), int(GGMLQuantizationType.Q8_0), (32,), name="w")
