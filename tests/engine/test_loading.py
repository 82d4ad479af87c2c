"""Loading: GGUF versions, metadata -> ModelArgs, tied heads, dtypes, generation behaviour."""
import gguf
import pytest
import torch

from engine import ModelFileError, load_model, model_info
from engine.gguf_file import GGUFFile
from engine.loader import model_args

from .reference import llama_cpp_logits, llama_cpp_model
from .tiny_gguf import TinyShape, write_tiny_llama


def with_version(src, dst, version: int):
    data = bytearray(src.read_bytes())
    data[4:8] = version.to_bytes(4, "little")
    dst.write_bytes(bytes(data))
    return dst


def test_gguf_v2_loads_and_v1_is_refused(tmp_path, tiny_gguf_factory):
    v2 = with_version(tiny_gguf_factory("F32"), tmp_path / "v2.gguf", 2)
    assert GGUFFile(v2).version == 2
    assert load_model(v2).generate(["fox"], max_tokens=2)[0].token_ids
    with pytest.raises(ModelFileError, match="version 1 is not supported"):
        load_model(with_version(v2, tmp_path / "v1.gguf", 1))


def test_model_args_from_metadata(tiny_gguf_factory):
    args = model_args(GGUFFile(tiny_gguf_factory("F32")))
    shape = TinyShape()
    assert (args.dim, args.n_layers, args.n_heads, args.n_kv_heads) == (
        shape.dim, shape.n_layers, shape.n_heads, shape.n_kv_heads)
    assert (args.hidden_dim, args.max_seq_len, args.head_dim) == (shape.hidden_dim, shape.context, shape.dim // shape.n_heads)
    assert args.norm_eps == pytest.approx(1e-5) and args.rope_theta == 10000.0
    assert not args.tied_output and args.rope_scaling_factor == 1.0


def test_linear_rope_scaling_is_read_and_yarn_accepted(tmp_path, spm_vocab, monkeypatch):
    def add(kind, factor):
        real = gguf.GGUFWriter.add_rope_freq_base

        def patched(self, value):
            real(self, value)
            self.add_rope_scaling_type(kind)
            self.add_rope_scaling_factor(factor)
        monkeypatch.setattr(gguf.GGUFWriter, "add_rope_freq_base", patched)

    add(gguf.RopeScalingType.LINEAR, 4.0)
    path = write_tiny_llama(tmp_path / "linear.gguf", spm_vocab, "F32")
    assert model_args(GGUFFile(path)).rope_scaling_factor == 4.0
    model, ref = load_model(path, dtype="float32"), llama_cpp_model(path)
    ids = model.tokenizer.encode("The quick brown fox jumps over the lazy dog.")
    ours, theirs = model.logits(ids), torch.from_numpy(llama_cpp_logits(ref, ids))
    assert ((ours - theirs).norm() / theirs.norm()) < 2e-4
    add(gguf.RopeScalingType.YARN, 4.0)  # implemented now (tests/engine/test_family.py compares it with llama.cpp)
    assert model_args(GGUFFile(write_tiny_llama(tmp_path / "yarn.gguf", spm_vocab, "F32"))).rope_scaling.kind == "yarn"


def test_tied_output_head_matches_llama_cpp(tmp_path, spm_vocab):
    path = write_tiny_llama(tmp_path / "tied.gguf", spm_vocab, "Q8_0", tied=True)
    model = load_model(path, dtype="float32")
    assert model.args.tied_output and model.model.output.weight is model.model.tok_embeddings.weight
    ids = model.tokenizer.encode("Paris is the capital of France.")
    ours, theirs = model.logits(ids), torch.from_numpy(llama_cpp_logits(llama_cpp_model(path), ids))
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_compute_agrees_with_fp32(tiny_gguf_factory, dtype):
    path = tiny_gguf_factory("Q4_0")
    ids = load_model(path).tokenizer.encode("A farmer has 12 cows and sells 5 of them.")
    reference = load_model(path, dtype="float32", llama_cpp_numerics=False).logits(ids)
    half = load_model(path, dtype=dtype).logits(ids)
    assert half.dtype == torch.float32
    assert (half.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9
    assert (half - reference).norm() / reference.norm() < 0.05


def test_generation_stops_at_a_stop_string_and_reports_why(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("F32"))
    free = model.generate(["The quick brown fox"], max_tokens=12)[0]
    assert free.finish_reason in ("length", "stop") and free.prompt_tokens > 0
    text = free.text
    assert len(text) > 3, "need some text to cut"
    stop = text[2:4]
    stopped = model.generate(["The quick brown fox"], max_tokens=12, stop=[stop])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == text[: text.index(stop)] and stop not in stopped.text


def test_batched_generation_equals_one_at_a_time(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("Q4_K"))
    prompts = ["Hi", "The quick brown fox jumps over the lazy dog and", "def solution():"]
    together = model.generate(prompts, max_tokens=10)
    alone = [model.generate([p], max_tokens=10)[0] for p in prompts]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]


def test_model_info_without_loading_weights(tiny_gguf_factory):
    info = model_info(tiny_gguf_factory("Q6_K"))
    assert info["tensor_types"]["Q6_K"] == 2 * 7 + 2 and info["tensor_types"]["F32"] == 2 * 2 + 1
    assert info["vocab_kind"] == "llama" and info["parameters"] > 0
