"""Fused, sort-free sampling in Triton: penalties, top-k, typical, top-p, min-p, temperature, draw.

One program per batch row; every row's parameters are tensors, so one launch serves a mixed
batch and nothing is read back to the host. Each filter leaves a set of logits that is an
interval, so instead of sorting the vocabulary we find each cut by bisection on its threshold
(a pass over the row per step), after the sort-free thresholding of FlashInfer's samplers.
The draw is the Gumbel-max form of the exponential race, argmax((x - m) / T - log(-log U)).
Same order and semantics as `engine.sampling` (the reference these kernels are tested against).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _alive(x, lo_ex, lo_in, hi_ex):
    return (x > lo_ex) & (x >= lo_in) & (x < hi_ex)


@triton.jit
def _row_stats(row_ptr, V, lo_ex, lo_in, hi_ex, BLOCK: tl.constexpr):
    """Max, min, sum of exp(x - max) and sum of exp(x - max) * x over the alive logits."""
    xmax = tl.full([], float("-inf"), tl.float32)
    xmin = tl.full([], float("inf"), tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < V, other=-float("inf"))
        ok = _alive(x, lo_ex, lo_in, hi_ex) & (cols < V)
        xmax = tl.maximum(xmax, tl.max(tl.where(ok, x, -float("inf")), 0))
        xmin = tl.minimum(xmin, tl.min(tl.where(ok, x, float("inf")), 0))
    z = tl.full([], 0.0, tl.float32)
    zx = tl.full([], 0.0, tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < V, other=-float("inf"))
        ok = _alive(x, lo_ex, lo_in, hi_ex) & (cols < V)
        e = tl.where(ok, tl.exp(x - xmax), 0.0)
        z += tl.sum(e, 0)
        zx += tl.sum(e * tl.where(ok, x, 0.0), 0)
    return xmax, xmin, z, zx


@triton.jit
def _above(row_ptr, V, t, xmax, z, lo_ex, lo_in, hi_ex, USE_MASS: tl.constexpr, BLOCK: tl.constexpr):
    """Count (or probability mass) of alive logits strictly above t."""
    total = tl.full([], 0.0, tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < V, other=-float("inf"))
        ok = _alive(x, lo_ex, lo_in, hi_ex) & (cols < V) & (x > t)
        if USE_MASS:
            total += tl.sum(tl.where(ok, tl.exp(x - xmax), 0.0), 0) / z
        else:
            total += tl.sum(ok.to(tl.float32), 0)
    return total


@triton.jit
def _lower_cut(row_ptr, V, limit, xmax, xmin, z, lo_ex, lo_in, hi_ex, USE_MASS: tl.constexpr, BLOCK: tl.constexpr):
    """Largest t with (count or mass above t) >= limit; tokens above it are the ones kept.

    48 halvings close the gap between adjacent float32 logits for any realistic logit range.
    """
    lo = xmin - 1.0
    hi = xmax
    for _ in range(48):
        mid = lo + (hi - lo) * 0.5
        if _above(row_ptr, V, mid, xmax, z, lo_ex, lo_in, hi_ex, USE_MASS, BLOCK) >= limit:
            lo = mid
        else:
            hi = mid
    return lo


@triton.jit
def _near(row_ptr, V, r, mu, xmax, z, lo_ex, lo_in, hi_ex, BLOCK: tl.constexpr):
    """Probability mass of alive logits with |x - mu| < r."""
    total = tl.full([], 0.0, tl.float32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < V, other=-float("inf"))
        ok = _alive(x, lo_ex, lo_in, hi_ex) & (cols < V) & (tl.abs(x - mu) < r)
        total += tl.sum(tl.where(ok, tl.exp(x - xmax), 0.0), 0) / z
    return total


@triton.jit
def filter_kernel(logits_ptr, stride, V, bounds_ptr, top_k_ptr, top_p_ptr, min_p_ptr, typical_p_ptr, BLOCK: tl.constexpr):
    """Per row, the interval of logits that survives top-k -> typical -> top-p -> min-p.

    Writes (lo_ex, lo_in, hi_ex, max): alive means lo_ex < x, lo_in <= x, x < hi_ex.
    """
    row = tl.program_id(0)
    row_ptr = logits_ptr + row * stride
    top_k = tl.load(top_k_ptr + row)
    top_p = tl.load(top_p_ptr + row)
    min_p = tl.load(min_p_ptr + row)
    typical_p = tl.load(typical_p_ptr + row)
    lo_ex = tl.full([], float("-inf"), tl.float32)
    lo_in = tl.full([], float("-inf"), tl.float32)
    hi_ex = tl.full([], float("inf"), tl.float32)

    xmax, xmin, z, zx = _row_stats(row_ptr, V, lo_ex, lo_in, hi_ex, BLOCK)
    if (top_k > 0) & (top_k < V):  # keep x when fewer than k alive logits are larger
        lo_ex = _lower_cut(row_ptr, V, top_k.to(tl.float32), xmax, xmin, z, lo_ex, lo_in, hi_ex, False, BLOCK)
        xmax, xmin, z, zx = _row_stats(row_ptr, V, lo_ex, lo_in, hi_ex, BLOCK)
    if typical_p < 1.0:  # surprise minus entropy is |x - mu| with mu the mean logit under p
        mu = zx / z
        lo_r = tl.full([], 0.0, tl.float32)
        hi_r = tl.maximum(xmax - mu, mu - xmin) * 1.001 + 1e-6
        for _ in range(48):
            mid = lo_r + (hi_r - lo_r) * 0.5
            if _near(row_ptr, V, mid, mu, xmax, z, lo_ex, lo_in, hi_ex, BLOCK) < typical_p:
                lo_r = mid
            else:
                hi_r = mid
        # keep |x - mu| <= lo_r: the mass strictly closer than each kept token is below typical_p
        lo_in = tl.maximum(lo_in, mu - lo_r)
        hi_ex = tl.minimum(hi_ex, mu + hi_r)
        xmax, xmin, z, zx = _row_stats(row_ptr, V, lo_ex, lo_in, hi_ex, BLOCK)
    if top_p < 1.0:  # keep x when the mass of larger alive logits is below top_p
        lo_ex = tl.maximum(lo_ex, _lower_cut(row_ptr, V, top_p, xmax, xmin, z, lo_ex, lo_in, hi_ex, True, BLOCK))
        xmax, xmin, z, zx = _row_stats(row_ptr, V, lo_ex, lo_in, hi_ex, BLOCK)
    if min_p > 0.0:
        lo_in = tl.maximum(lo_in, xmax + tl.log(min_p))
    tl.store(bounds_ptr + row * 4 + 0, lo_ex)
    tl.store(bounds_ptr + row * 4 + 1, lo_in)
    tl.store(bounds_ptr + row * 4 + 2, hi_ex)
    tl.store(bounds_ptr + row * 4 + 3, xmax)


@triton.jit
def draw_kernel(logits_ptr, stride, V, bounds_ptr, temperature_ptr, seed_ptr, out_ptr,
                BLOCK: tl.constexpr, N_DRAWS: tl.constexpr):
    """N_DRAWS independent tokens per row from softmax(x / T) over the alive logits (T = 0: argmax)."""
    row = tl.program_id(0)
    row_ptr = logits_ptr + row * stride
    lo_ex = tl.load(bounds_ptr + row * 4 + 0)
    lo_in = tl.load(bounds_ptr + row * 4 + 1)
    hi_ex = tl.load(bounds_ptr + row * 4 + 2)
    xmax = tl.load(bounds_ptr + row * 4 + 3)
    temperature = tl.load(temperature_ptr + row)
    seed = tl.load(seed_ptr + row)
    greedy = (temperature == 0.0).to(tl.int32)
    inv_t = 1.0 / tl.maximum(temperature, 1e-6)
    draws = tl.arange(0, N_DRAWS)
    best_key = tl.full([N_DRAWS], float("-inf"), tl.float32)
    best_idx = tl.zeros([N_DRAWS], tl.int32)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + cols, mask=cols < V, other=-float("inf"))
        ok = (cols < V) & ((_alive(x, lo_ex, lo_in, hi_ex).to(tl.int32) + greedy) > 0)
        u = tl.rand(seed, draws[:, None] * V + cols[None, :])  # (N_DRAWS, BLOCK)
        gumbel = -tl.log(-tl.log(tl.maximum(u, 1e-20)))
        key = tl.where(greedy > 0, x[None, :], (x[None, :] - xmax) * inv_t + gumbel)
        key = tl.where(ok[None, :], key, -float("inf"))
        block_best = tl.max(key, 1)
        block_idx = tl.argmax(key, 1) + start
        better = block_best > best_key
        best_idx = tl.where(better, block_idx, best_idx)
        best_key = tl.where(better, block_best, best_key)
    tl.store(out_ptr + row * N_DRAWS + draws, best_idx)


@triton.jit
def adjust_kernel(logits_ptr, stride, token_ptr, bias_ptr, window_ptr, count_ptr, L,
                  repetition_ptr, frequency_ptr, presence_ptr, BLOCK: tl.constexpr):
    """Apply logit_bias and the three penalties to the (unique) listed tokens of each row."""
    row = tl.program_id(0)
    repetition = tl.load(repetition_ptr + row)
    frequency = tl.load(frequency_ptr + row)
    presence = tl.load(presence_ptr + row)
    for start in range(0, L, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        in_row = cols < L
        token = tl.load(token_ptr + row * L + cols, mask=in_row, other=-1)
        valid = in_row & (token >= 0)
        x = tl.load(logits_ptr + row * stride + token, mask=valid, other=0.0)
        x = x + tl.load(bias_ptr + row * L + cols, mask=valid, other=0.0)
        seen = tl.load(window_ptr + row * L + cols, mask=valid, other=0) != 0
        x = tl.where(seen, tl.where(x > 0, x / repetition, x * repetition), x)
        count = tl.load(count_ptr + row * L + cols, mask=valid, other=0).to(tl.float32)
        x = x - count * frequency - tl.where(count > 0, presence, 0.0)
        tl.store(logits_ptr + row * stride + token, x, mask=valid)


@triton.jit
def bitmask_kernel(logits_ptr, stride, V, mask_ptr, words, BLOCK: tl.constexpr):
    """-inf for every token whose bit in the row's packed allowed-token mask (int32 words) is 0."""
    row = tl.program_id(0)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        in_row = cols < V
        word = tl.load(mask_ptr + row * words + cols // 32, mask=in_row, other=-1)
        allowed = ((word >> (cols % 32)) & 1) != 0
        tl.store(logits_ptr + row * stride + cols, float("-inf"), mask=in_row & ~allowed)


def launch_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """In place on logits (B, V): disallowed tokens of each row become -inf; bitmask (B, ceil(V/32)) int32."""
    B, V = logits.shape
    bitmask_kernel[(B,)](logits, logits.stride(0), V, bitmask, bitmask.shape[1],
                         BLOCK=min(4096, triton.next_power_of_2(V)))


def launch_adjust(logits: torch.Tensor, tokens, bias, window, counts, repetition, frequency, presence) -> None:
    """In place on logits (B, V); the per-row token tables are (B, L), padded with token -1."""
    B, L = tokens.shape
    if L:
        adjust_kernel[(B,)](logits, logits.stride(0), tokens, bias, window, counts, L,
                            repetition, frequency, presence, BLOCK=min(1024, triton.next_power_of_2(L)))


def launch_sample(logits: torch.Tensor, temperature, top_k, top_p, min_p, typical_p, seeds,
                  n_draws: int = 1) -> torch.Tensor:
    """Token ids (B, n_draws) for float32 logits (B, V); parameters are (B,) tensors on the same device.

    Two launches, no host synchronisation: the filter cut, then the draw.
    """
    B, V = logits.shape
    bounds = torch.empty(B, 4, dtype=torch.float32, device=logits.device)
    block = min(4096, triton.next_power_of_2(V))
    filter_kernel[(B,)](logits, logits.stride(0), V, bounds, top_k, top_p, min_p, typical_p, BLOCK=block)
    draws = triton.next_power_of_2(n_draws)
    out = torch.empty(B, draws, dtype=torch.int64, device=logits.device)
    draw_block = max(16, min(block, 4096 // draws))
    draw_kernel[(B,)](logits, logits.stride(0), V, bounds, temperature, seeds, out, BLOCK=draw_block, N_DRAWS=draws)
    return out[:, :n_draws]
