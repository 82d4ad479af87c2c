"""A decode step's transformer layers as one native call (kernels/cpu_decode.c) instead of ~10 Python
module and operator dispatches a layer: on the 135M default model those took longer than the layers'
matmuls. The descriptor of every layer's weights is built once (the packed buffers do not move after
loading); TransformerBlock's path over the same kernels stays the reference (tests/engine/test_native_layers.py).
"""
from __future__ import annotations

import ctypes

import torch

from .kernels import cpu_matmul
from .paged_attention import DecodeTables
from .quant_linear import PackedLinear

FORMAT_CODES = {"int4": 0, "int4sym": 1, "int8": 2}  # as cpu_decode.c's enum


class Linear(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int64), ("n", ctypes.c_int64), ("k", ctypes.c_int64),
                ("weight", ctypes.c_void_p), ("scales", ctypes.c_void_p)]


class Layer(ctypes.Structure):
    _fields_ = [("attention_norm", ctypes.c_void_p), ("ffn_norm", ctypes.c_void_p), ("qkv", Linear * 3),
                ("wo", Linear), ("w13", Linear * 2), ("w2", Linear), ("qkv_parts", ctypes.c_int64),
                ("w13_parts", ctypes.c_int64)]


class Decoder(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ("n_layers", "dim", "hidden", "heads", "kv_heads", "head_dim",
                                                     "neox", "window")] \
        + [("eps", ctypes.c_float), ("layers", ctypes.POINTER(Layer))]


class NativeLayers:
    """Every layer of a loaded model described for cpu_decode.c (built on the first decode step that fits, after
    loading: a layer's weights replaced later would not be seen)."""

    def __init__(self, model):
        args = model.args
        first = model.layers[0]
        # (the model owns the buffers the descriptor points into, and holds this)
        self._layers = (Layer * args.n_layers)(*(_layer(block) for block in model.layers))
        self._decoder = Decoder(args.n_layers, args.dim, first.feed_forward.w2.in_features, args.n_heads,
                                args.n_kv_heads, args.head_dim, int(first.attention.rope_layout == "neox"),
                                args.sliding_window or 0, first.attention_norm.eps,
                                ctypes.cast(self._layers, ctypes.POINTER(Layer)))

    @staticmethod
    def fits(model) -> bool:
        """Whether every layer runs in cpu_decode.c: native attention, every linear packed in the tiles layouts
        (q|k|v and gate|up fused or not), no biases, dims a multiple of 16."""
        args = model.args
        if args.qkv_bias or args.dim % 16 or not model.native_decode:
            return False
        for block in model.layers:
            att, ff = block.attention, block.feed_forward
            linears = (*_qkv_parts(att), att.wo, *_gate_up_parts(ff), ff.w2)
            if not all(isinstance(m, PackedLinear) and m.layout == "tiles" for m in linears):
                return False
            if not (block.attention_norm.native and block.ffn_norm.native) or ff.w2.in_features % 16:
                return False
        return True

    def run(self, h: torch.Tensor, cos_sin: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor,
            decode: DecodeTables) -> torch.Tensor:
        """h (rows, dim) bf16 embeddings -> the last layer's output, in place; cos_sin (rows, head_dim / 2, 2)."""
        h, cos_sin = h.contiguous(), cos_sin.float().contiguous()
        cpu_matmul.decode_layers(ctypes.addressof(self._decoder), h, cos_sin, k_pool, v_pool, decode.tables,
                                 decode.keys, decode.block_size)
        return h


def _linear(m: PackedLinear) -> Linear:
    return Linear(FORMAT_CODES[m.format], m.out_features, m.in_features, m.packed_weight.data_ptr(),
                  m.scales.data_ptr())


def _qkv_parts(attention) -> tuple:
    return (attention.wqkv,) if attention.wqkv is not None else (attention.wq, attention.wk, attention.wv)


def _gate_up_parts(feed_forward) -> tuple:
    return (feed_forward.w13,) if feed_forward.w13 is not None else (feed_forward.w1, feed_forward.w3)


def _layer(block) -> Layer:
    att, ff = block.attention, block.feed_forward
    qkv, gate_up = _qkv_parts(att), _gate_up_parts(ff)
    return Layer(block.attention_norm.weight.data_ptr(), block.ffn_norm.weight.data_ptr(),
                 (Linear * 3)(*map(_linear, qkv)), _linear(att.wo), (Linear * 2)(*map(_linear, gate_up)),
                 _linear(ff.w2), len(qkv), len(gate_up))
