"""Round activations the way llama.cpp's CPU matmuls do before a quantized dot product.

llama.cpp converts the input row of `x @ W.T` to the weight type's partner format
(ggml `vec_dot_type`): Q8_0 blocks for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the
K-quants, fp16 for F16 and bf16 for BF16 weights. Applying the same rounding here (fake
quantization: quantize, then dequantize) makes our logits agree with llama.cpp's to float
rounding instead of to ~2%.
"""
from __future__ import annotations

import torch

# weight type -> activation format
ACTIVATION_FORMAT = {
    "Q4_0": "Q8_0", "Q5_0": "Q8_0", "Q8_0": "Q8_0", "Q4_1": "Q8_1", "Q5_1": "Q8_1",
    "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K",
    "F16": "F16", "BF16": "BF16",
}


def fake_quantize(x: torch.Tensor, fmt: str | None) -> torch.Tensor:
    """x (..., n) rounded through `fmt` and back, in float32; None leaves x unchanged."""
    if fmt is None:
        return x
    if fmt == "F16":
        return x.to(torch.float16).to(x.dtype)
    if fmt == "BF16":
        return x.to(torch.bfloat16).to(x.dtype)
    if fmt in ("Q8_0", "Q8_1"):
        return _q8_0(x.float()).to(x.dtype)
    if fmt == "Q8_K":
        return _q8_k(x.float()).to(x.dtype)
    raise ValueError(f"unknown activation format {fmt}")


def q8_1_sum_error(x: torch.Tensor) -> torch.Tensor:
    """Per 32-block, Q8_1's stored sum minus the sum of its dequantized values: (..., n/32).

    A Q4_1/Q5_1 dot product adds `min * s` with s = fp16(d * sum(q)) computed from the unrounded
    scale; fake quantization alone would use fp16(d) * sum(q).
    """
    q, d, d16 = _q8_blocks(x.float())
    total = q.sum(-1)
    return (d * total).to(torch.float16).float() - d16.squeeze(-1) * total


def _q8_blocks(x: torch.Tensor):
    blocks = x.reshape(*x.shape[:-1], -1, 32)  # (..., n/32, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(blocks * inv)  # ties to even, as the AVX path's _mm256_round_ps
    d = amax / 127.0
    return q, d.squeeze(-1), d.to(torch.float16).float()  # the block scale is stored as fp16


def _q8_0(x: torch.Tensor) -> torch.Tensor:
    q, _, d16 = _q8_blocks(x)
    return (q * d16).reshape(x.shape)


def _q8_k(x: torch.Tensor) -> torch.Tensor:
    blocks = x.reshape(*x.shape[:-1], -1, 256)  # (..., n/256, 256)
    index = blocks.abs().argmax(-1, keepdim=True)
    signed_max = blocks.gather(-1, index)  # the value of largest magnitude, sign kept
    iscale = torch.where(signed_max != 0, -127.0 / signed_max, torch.zeros_like(signed_max))
    q = torch.clamp(torch.round(blocks * iscale), max=127)
    d = torch.where(iscale != 0, 1.0 / iscale, torch.zeros_like(iscale))
    return (q * d).reshape(x.shape)


def fp16_rounded_attention(q, k, v, mask) -> torch.Tensor:
    """Attention as llama.cpp's CPU path computes it: q and the probabilities pass through fp16."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, n_heads, S, head_dim)
    scores = fake_quantize(q, "F16") @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, n_heads, T, S)
    probs = torch.softmax(scores.float().masked_fill(~mask, float("-inf")), dim=-1)
    return fake_quantize(probs, "F16").to(v.dtype) @ v  # (B, n_heads, T, head_dim)
