"""The LLaMA family beyond `llama`: qwen2 (Q/K/V biases), qwen3 (per-head Q/K norms), LLaMA-3.1
rope factors, YaRN and linear rope scaling against llama.cpp on tiny random files (float32, the
llama.cpp-exact reference path); a sliding window against its definition."""
import gguf
import numpy as np
import pytest
import torch

from engine import ModelFileError, load_model
from engine.gguf_file import GGUFFile
from engine.loader import model_args
from engine.rope import yarn_correction_range

from .forward import full_forward
from .reference import llama_cpp_greedy, llama_cpp_logits, llama_cpp_model
from .test_parity import PROMPTS, REL_ERROR_BOUND
from .tiny_gguf import TinyShape, write_tiny_llama


def rope_scaling(kind: str, factor: float, original_context: int | None = None):
    def add(writer: gguf.GGUFWriter) -> None:
        writer.add_rope_scaling_type(gguf.RopeScalingType(kind))
        writer.add_rope_scaling_factor(factor)
        if original_context:
            writer.add_rope_scaling_orig_ctx_len(original_context)
    return add


def llama3_factors(head_dim: int = 64) -> np.ndarray:
    """LLaMA-3.1's per-frequency divisors, as its converter writes them (factor 8, low 1, high 4, 8192)."""
    base, factor, low, high, original = 10000.0, 8.0, 1.0, 4.0, 64
    freqs = base ** -(np.arange(0, head_dim, 2) / head_dim)
    wavelen = 2 * np.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    return np.where(wavelen < original / high, 1.0,
                    np.where(wavelen > original / low, factor, 1 / ((1 - smooth) / factor + smooth)))


VARIANTS = {
    "qwen2": dict(arch="qwen2"),
    "qwen3": dict(arch="qwen3"),
    "llama3-rope-freqs": dict(rope_freqs=llama3_factors()),
    "yarn": dict(metadata=rope_scaling("yarn", 4.0, original_context=64)),
    "linear": dict(metadata=rope_scaling("linear", 4.0)),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, tmp_path_factory, spm_vocab):
    path = tmp_path_factory.mktemp("family") / f"{request.param}.gguf"
    return request.param, write_tiny_llama(path, spm_vocab, "F32", **VARIANTS[request.param])


def test_logits_match_llama_cpp(variant):
    name, path = variant
    ours, ref = load_model(path, device="cpu", dtype="float32"), llama_cpp_model(path)
    agree = total = 0
    worst = 0.0
    for text in PROMPTS:
        ids = ours.tokenizer.encode(text)
        mine, theirs = ours.logits(ids).numpy(), llama_cpp_logits(ref, ids)
        agree += int((mine.argmax(-1) == theirs.argmax(-1)).sum())
        total += len(ids)
        worst = max(worst, float(np.linalg.norm(mine - theirs) / np.linalg.norm(theirs)))
    print(f"{name}: argmax agreement {agree / total:.4f}, max relative error {worst:.2e}")
    assert agree / total >= 0.99
    assert worst < REL_ERROR_BOUND["F32"]


def test_greedy_continuations_match_llama_cpp(variant):
    name, path = variant
    ours, ref = load_model(path, device="cpu", dtype="float32"), llama_cpp_model(path)
    for text in PROMPTS[:3]:
        ids = ours.tokenizer.encode(text)
        assert ours.generate([text], max_tokens=24)[0].token_ids == llama_cpp_greedy(ref, ids, 24), (name, text)


def test_family_metadata_is_read(variant):
    name, path = variant
    args = model_args(GGUFFile(path))
    assert args.rope_layout == ("neox" if name.startswith("qwen") else "norm")
    assert args.qkv_bias == (name == "qwen2") and args.qk_norm == (name == "qwen3")
    assert args.rope_scaling.kind == {"yarn": "yarn", "linear": "linear"}.get(name, "none")


def test_yarn_correction_range_is_ggml_s():
    # ggml_rope_yarn_corr_dims(64, 64, 10000, 32, 1): 64 ln(64 / (32 * 2pi)) / (2 ln 1e4) = -3.98 -> floor,
    # clamped to 0; 64 ln(64 / 2pi) / (2 ln 1e4) = 8.07 -> ceil 9
    low, high = yarn_correction_range(64, 64, 10000.0, 32.0, 1.0)
    assert low == 0.0 and high == 9


@pytest.mark.parametrize("scaling", ["yarn", "linear", "llama3-rope-freqs"])
def test_rope_scaling_changes_the_logits(tmp_path, spm_vocab, scaling):
    """The agreement above would also hold if both engines ignored the scaling: make sure it acts."""
    plain = load_model(write_tiny_llama(tmp_path / "plain.gguf", spm_vocab, "F32"), dtype="float32")
    scaled = load_model(write_tiny_llama(tmp_path / "scaled.gguf", spm_vocab, "F32", **VARIANTS[scaling]),
                        dtype="float32")
    ids = plain.tokenizer.encode(PROMPTS[1])
    assert not torch.allclose(plain.logits(ids)[1:], scaled.logits(ids)[1:], atol=1e-3)


def test_unknown_rope_scaling_is_refused_clearly(tmp_path, spm_vocab):
    path = write_tiny_llama(tmp_path / "longrope.gguf", spm_vocab, "F32",
                            metadata=lambda w: w.add_string("llama.rope.scaling.type", "longrope"))
    with pytest.raises(ModelFileError, match="rope scaling 'longrope' is not supported"):
        load_model(path)


def window(size: int):
    return lambda writer: writer.add_uint32("llama.attention.sliding_window", size)


def test_a_sliding_window_limits_what_a_query_sees(tmp_path, spm_vocab):
    """One layer and relative positions (RoPE): with a window of w, the last token's logits equal
    those of the last w tokens read alone; with a window longer than the text, nothing changes."""
    shape = TinyShape(n_layers=1)
    plain = load_model(write_tiny_llama(tmp_path / "full.gguf", spm_vocab, "F32", shape=shape), dtype="float32",
                       llama_cpp_numerics=False)
    windowed = load_model(write_tiny_llama(tmp_path / "w8.gguf", spm_vocab, "F32", shape=shape, metadata=window(8)),
                          dtype="float32", llama_cpp_numerics=False)
    wide = load_model(write_tiny_llama(tmp_path / "w99.gguf", spm_vocab, "F32", shape=shape, metadata=window(99)),
                      dtype="float32", llama_cpp_numerics=False)
    assert windowed.args.sliding_window == 8
    ids = plain.tokenizer.encode("The quick brown fox jumps over the lazy dog and runs away")
    assert len(ids) > 12
    last = windowed.logits(ids)[-1]
    alone = full_forward(plain.model, torch.tensor([ids[-8:]]))[0, -1]
    torch.testing.assert_close(last, alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(last, plain.logits(ids)[-1], atol=1e-2)
    torch.testing.assert_close(wide.logits(ids), plain.logits(ids), atol=1e-5, rtol=1e-5)
    early = windowed.logits(ids[:8])
    torch.testing.assert_close(early, plain.logits(ids[:8]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_the_packed_bf16_default_runs_the_family(tmp_path, spm_vocab, arch):
    path = write_tiny_llama(tmp_path / f"{arch}.gguf", spm_vocab, "Q4_0", arch=arch)
    packed, reference = load_model(path), load_model(path, dtype="float32", llama_cpp_numerics=False)
    assert packed.weights == "packed"
    ids = packed.tokenizer.encode(PROMPTS[0])
    ours, theirs = packed.logits(ids), reference.logits(ids)
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.9
    assert (ours - theirs).norm() / theirs.norm() < 0.05
