"""Rotary position embeddings as llama.cpp computes them (ggml's rope op).

Angles: position p, pair i of n_dims: theta = p * base^(-2i/n_dims), built in float32 pair
after pair as ggml does, divided by per-frequency factors when the file has `rope_freqs`
(LLaMA-3.1), then scaled: linear (position interpolation) or YaRN (arXiv 2309.00071: pairs
below the correction range keep their extrapolated angle, pairs above it are interpolated,
a linear ramp between; cos and sin grow by 1 + 0.1 ln(factor)).
Layouts: "norm" rotates adjacent pairs (x[2i], x[2i+1]) (`llama` files, whose converter
permuted Q/K for it); "neox" rotates (x[i], x[i + n_dims/2]) (`qwen2`, `qwen3`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ROPE_LAYOUTS = ("norm", "neox")
ROPE_SCALINGS = ("none", "linear", "yarn")


@dataclass(frozen=True)
class RopeScaling:
    kind: str = "none"  # one of ROPE_SCALINGS
    factor: float = 1.0  # context extension factor (1 / ggml's freq_scale)
    original_context: int = 0  # YaRN: the context the model was trained with
    ext_factor: float = 1.0  # YaRN: weight of the extrapolation ramp
    attn_factor: float = 1.0  # YaRN: extra magnitude scale of cos/sin
    beta_fast: float = 32.0  # YaRN: rotations that bound the correction range
    beta_slow: float = 1.0


def yarn_correction_range(n_dims: int, original_context: int, base: float, beta_fast: float,
                          beta_slow: float) -> tuple[float, float]:
    """The pair indices [low, high] where YaRN's ramp runs (ggml_rope_yarn_corr_dims)."""
    def dim(rotations: float) -> float:
        return n_dims * math.log(original_context / (rotations * 2 * math.pi)) / (2 * math.log(base))
    return max(0.0, math.floor(dim(beta_fast))), min(n_dims - 1.0, math.ceil(dim(beta_slow)))


def precompute_freqs_cis(n_dims: int, max_seq_len: int, base: float, scaling: RopeScaling = RopeScaling(),
                         freq_factors: torch.Tensor | None = None) -> torch.Tensor:
    """Rotations (cos, sin) for every position: (max_seq_len, n_dims // 2, 2), float32.

    Stored real rather than complex so that `model.to(dtype)` cannot silently drop the sin part.
    """
    half = n_dims // 2
    theta_scale = torch.tensor(base, dtype=torch.float32) ** torch.tensor(-2.0 / n_dims, dtype=torch.float32)
    positions = torch.arange(max_seq_len, dtype=torch.float32).unsqueeze(1)  # (max_seq_len, 1)
    factors = torch.cat([positions, theta_scale.expand(max_seq_len, half - 1)], dim=1)
    extrapolated = torch.cumprod(factors, dim=1)  # (max_seq_len, half): p * theta_scale**i, rounded per step
    if freq_factors is not None:
        extrapolated = extrapolated / freq_factors.float()
    freq_scale = torch.tensor(1.0 / scaling.factor, dtype=torch.float32) if scaling.kind != "none" else None
    angles = extrapolated if freq_scale is None else extrapolated * freq_scale
    magnitude = 1.0
    if scaling.kind == "yarn" and scaling.ext_factor != 0:
        angles, magnitude = _yarn(extrapolated, angles, n_dims, base, scaling)
    angles = angles.double()
    return (torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1) * magnitude).float()


def _yarn(extrapolated: torch.Tensor, interpolated: torch.Tensor, n_dims: int, base: float,
          scaling: RopeScaling) -> tuple[torch.Tensor, float]:
    low, high = yarn_correction_range(n_dims, scaling.original_context, base, scaling.beta_fast, scaling.beta_slow)
    pair = torch.arange(extrapolated.shape[1], dtype=torch.float32)
    ramp = 1 - ((pair - low) / max(0.001, high - low)).clamp(0, 1)  # 1: keep the extrapolated angle
    mix = ramp * scaling.ext_factor
    angles = interpolated * (1 - mix) + extrapolated * mix
    return angles, scaling.attn_factor * (1.0 + 0.1 * math.log(scaling.factor))


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor, layout: str = "norm") -> torch.Tensor:
    """x: (B, T, n, head_dim); freqs_cis: (B, T, head_dim // 2, 2) as (cos, sin)."""
    xf = x.float()
    if layout == "neox":  # pair i is (x[i], x[i + half])
        half = x.shape[-1] // 2
        xf = torch.stack([xf[..., :half], xf[..., half:]], dim=-1)  # (B, T, n, half, 2)
    pairs = torch.view_as_complex(xf.reshape(*x.shape[:-1], -1, 2).contiguous())  # (B, T, n, head_dim/2)
    rotation = torch.view_as_complex(freqs_cis.float().contiguous()).unsqueeze(2)  # (B, T, 1, head_dim/2)
    rotated = torch.view_as_real(pairs * rotation)  # (B, T, n, head_dim/2, 2)
    if layout == "neox":
        rotated = rotated.transpose(-1, -2)  # back to halves: (B, T, n, 2, head_dim/2)
    return rotated.flatten(3).to(x.dtype)
