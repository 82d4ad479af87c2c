"""The LLaMA-architecture transformer, in forward order (after meta-llama/llama and gpt-fast).

One model for the family: `llama` (LLaMA-1/2/3, Mistral, SmolLM), `qwen2` (adds Q/K/V biases)
and `qwen3` (adds an RMSNorm of each Q and K head before RoPE). RoPE layouts and scaling are in
rope.py; a sliding attention window, where a file declares one, is applied by paged_attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .activation_quant import fake_quantize, q8_1_sum_error
from .kernels import cpu_matmul
from .native_layers import NativeLayers
from .paged_attention import PagedBatch, decode_attention, paged_attention
from .rope import RopeScaling, apply_rotary_emb, precompute_freqs_cis


@dataclass(frozen=True)
class ModelArgs:
    dim: int = 576
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    hidden_dim: int = 1536
    vocab_size: int = 49152
    max_seq_len: int = 8192
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    rope_layout: str = "norm"  # "norm": adjacent pairs (llama); "neox": halves (qwen2, qwen3)
    head_dim: int = 0  # 0 means dim // n_heads
    tied_output: bool = False
    qkv_bias: bool = False  # qwen2
    qk_norm: bool = False  # qwen3
    sliding_window: int = 0  # a query sees at most this many keys (itself included); 0: all

    @property
    def rope_scaling_factor(self) -> float:
        return self.rope_scaling.factor

    def __post_init__(self):
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")

    @classmethod
    def tiny(cls, **overrides) -> ModelArgs:
        """A small preset for tests."""
        base = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128, vocab_size=256, max_seq_len=128)
        return cls(**{**base, **overrides})


class Linear(nn.Linear):
    """A bias-free linear layer that can round its input as llama.cpp does (see activation_quant)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)
        self.activation_format: str | None = None
        self.block_mins: torch.Tensor | None = None  # (out, in/32) of Q4_1/Q5_1 weights, for Q8_1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(fake_quantize(x, self.activation_format), self.weight)
        if self.activation_format == "Q8_1":
            y = y + F.linear(q8_1_sum_error(x), self.block_mins)
        return y


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.native = False  # bf16 on the CPU through kernels/cpu_matmul.c (set by the loader with the native kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.native and x.dtype == torch.bfloat16 and self.weight.dtype == torch.bfloat16:
            return cpu_matmul.rms_norm(x.contiguous(), self.weight, self.eps)  # one call instead of ~8 ops
        if x.dtype != torch.float32:  # the fast path: one fused fp32 kernel
            return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)
        # float32 is the reference: fp64 sum of squares, as ggml does
        xf = x.float()
        mean_square = (xf * xf).double().mean(-1, keepdim=True) + self.eps
        normed = xf * (1.0 / torch.sqrt(mean_square.float()))
        return (normed * self.weight.float()).to(x.dtype)


def rope_table(args: ModelArgs, freq_factors: torch.Tensor | None = None) -> torch.Tensor:
    """RoPE rotations (max_seq_len, head_dim // 2, 2) for this model."""
    return precompute_freqs_cis(args.head_dim, args.max_seq_len, args.rope_theta, args.rope_scaling, freq_factors)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wq = Linear(args.dim, args.n_heads * args.head_dim)
        self.wk = Linear(args.dim, args.n_kv_heads * args.head_dim)
        self.wv = Linear(args.dim, args.n_kv_heads * args.head_dim)
        self.wo = Linear(args.n_heads * args.head_dim, args.dim)
        self.wqkv: nn.Module | None = None  # wq, wk, wv as one matmul when the loader fused them
        width = (args.n_heads + 2 * args.n_kv_heads) * args.head_dim
        self.qkv_bias = nn.Parameter(torch.zeros(width)) if args.qkv_bias else None  # q|k|v biases, one add
        self.q_norm = RMSNorm(args.head_dim, args.norm_eps) if args.qk_norm else None
        self.k_norm = RMSNorm(args.head_dim, args.norm_eps) if args.qk_norm else None
        self.rope_layout = args.rope_layout
        self.fp16_rounding = False  # llama.cpp's f16 KV cache and f16 matmul inputs; see loader
        self.native = False  # RoPE through kernels/cpu_matmul.c (set by the loader with the native kernels)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """q|k|v of every token: (B, T, n_heads + 2 * n_kv_heads, head_dim)."""
        qkv = self.wqkv(x) if self.wqkv is not None else torch.cat([self.wq(x), self.wk(x), self.wv(x)], dim=-1)
        if self.qkv_bias is not None:
            qkv = qkv + self.qkv_bias
        return qkv.view(*x.shape[:2], -1, self.head_dim)

    def decodes_natively(self) -> bool:
        """Whether a decode step's attention runs as one native kernel call (paged_attention.decode_attention)."""
        return (self.native and self.q_norm is None and not self.fp16_rounding
                and cpu_matmul.decode_attention_fits(self.n_heads, self.n_kv_heads, self.head_dim))

    def _rotated_natively(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
        qkv = self._project(x).contiguous()
        cpu_matmul.rope_(qkv, self.n_heads + self.n_kv_heads, freqs_cis, self.rope_layout)  # one call, not ~8 ops
        return qkv

    def _qkv(self, x: torch.Tensor, freqs_cis: torch.Tensor):
        heads = self.n_heads + self.n_kv_heads
        if self.native and self.q_norm is None and x.dtype == torch.bfloat16:
            qkv = self._rotated_natively(x, freqs_cis)
            return qkv[:, :, :self.n_heads], qkv[:, :, self.n_heads:heads], qkv[:, :, heads:]
        qkv = self._project(x)
        qk, v = qkv[:, :, :heads], qkv[:, :, heads:]
        if self.q_norm is not None:  # qwen3: each head normalised before its rotation
            qk = torch.cat([self.q_norm(qk[:, :, :self.n_heads]), self.k_norm(qk[:, :, self.n_heads:])], dim=2)
        qk = apply_rotary_emb(qk, freqs_cis, self.rope_layout)  # one rotation for q and k
        return qk[:, :, :self.n_heads], qk[:, :, self.n_heads:], v

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, paged: PagedBatch, layer: int) -> torch.Tensor:
        if paged.decode is not None:  # built so only when every layer decodes natively
            return self.wo(decode_attention(self._rotated_natively(x, freqs_cis), self.n_heads, paged, layer))
        q, k, v = self._qkv(x, freqs_cis)
        return self.wo(paged_attention(q, k, v, paged, layer, self.fp16_rounding))  # (B, T, dim)


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w1 = Linear(args.dim, args.hidden_dim)  # gate
        self.w2 = Linear(args.hidden_dim, args.dim)  # down
        self.w3 = Linear(args.dim, args.hidden_dim)  # up
        self.w13: nn.Module | None = None  # gate and up as one matmul when the loader fused them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w13 is not None:
            gate, up = self.w13(x).chunk(2, dim=-1)
            return self.w2(F.silu(gate) * up)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, paged: PagedBatch, layer: int) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), freqs_cis, paged, layer)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = Linear(args.dim, args.vocab_size)
        if args.tied_output:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer("freqs_cis", rope_table(args), persistent=False)
        self.layers_in_one_call = True  # decode steps through native_layers when every layer fits it
        self._native_layers: NativeLayers | None | bool = False  # False: not decided yet

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (norm weights are always dense and kept in it)."""
        return self.norm.weight.dtype

    @property
    def native_decode(self) -> bool:
        """Whether a decode step's attention runs natively in every layer (forward_rows builds its batch so)."""
        return all(layer.attention.decodes_natively() for layer in self.layers)

    def _layers_natively(self, paged: PagedBatch) -> NativeLayers | None:
        """The layers as one native call for this decode step (no shared prefix: that one is a flash call), or None."""
        d = paged.decode
        if not self.layers_in_one_call or d is None or d.shared:
            return None
        if self._native_layers is False:  # decided once, on the first decode step (the model is loaded by then)
            self._native_layers = NativeLayers(self) if NativeLayers.fits(self) else None
        return self._native_layers

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, paged: PagedBatch,
                logits_at: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One step over the paged KV pool (the only forward path: prefill, decode, scoring, beams).

        tokens, positions: (B, T), right-padded. The new tokens' K/V are written to the pool at
        `paged.write_slots` and every query attends to its row's slots. logits_at: (rows, cols),
        the N (row, position) pairs whose logits are wanted -> (N, vocab_size); None -> every
        position, (B, T, vocab_size). Logits are float32.
        """
        h = self.tok_embeddings(tokens)  # (B, T, dim)
        freqs_cis = self.freqs_cis[positions]  # (B, T, head_dim // 2, 2)
        native = self._layers_natively(paged)
        if native is not None:
            h = native.run(h.view(-1, h.shape[-1]), freqs_cis.flatten(0, 1), paged.k_pool, paged.v_pool,
                           paged.decode).view(h.shape)
        else:
            for i, layer in enumerate(self.layers):
                h = layer(h, freqs_cis, paged, i)
        if logits_at is not None:  # only the positions that are sampled reach the head
            h = h[logits_at]  # (N, dim)
        return self.output(self.norm(h)).float()
