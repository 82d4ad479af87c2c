"""Malformed model files (issue 17): every value that feeds a shape, an allocation or a division is bounded,
a shifted tensor offset, a short vocabulary and NaN/inf weights are found, and each is one clear
ModelFileError naming the file and the problem, quickly (`reason model-info` on them: tests/app/test_model_info.py)."""
import time

import gguf
import numpy as np
import pytest

from engine import ModelFileError, load_model, model_info
from engine.gguf_file import GGUFFile

from .tiny_gguf import write_tiny_llama

U32, F32 = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32


def tiny(tmp_path, spm_vocab, name: str, weight_type: str = "Q8_0", **values):
    """A tiny llama file whose `llama.<key>` metadata (dots written as __) are overridden by `values`."""
    def override(writer):
        for key, value in values.items():
            kind = F32 if isinstance(value, float) else U32
            writer.add_key_value(f"llama.{key.replace('__', '.')}", value, kind)
    return write_tiny_llama(tmp_path / f"{name}.gguf", spm_vocab, weight_type, metadata=override)


def assert_refused(path, match, loads=("dense",)):
    """model_info and load_model (each weight layout) each refuse `path`, quickly."""
    for attempt in [lambda: model_info(path, check_tensors=True)] + [
            lambda w=w: load_model(path, device="cpu", dtype="bfloat16" if w == "packed" else "float32", weights=w)
            for w in loads]:
        start = time.perf_counter()
        with pytest.raises(ModelFileError, match=match) as caught:
            attempt()
        assert str(path) in str(caught.value) and time.perf_counter() - start < 5


@pytest.mark.parametrize("key,value,match", [
    ("attention__head_count", 0, "head_count' is 0"),
    ("attention__head_count_kv", 0, "head_count_kv' is 0"),
    ("embedding_length", 0, "embedding_length' is 0"),
    ("block_count", 0, "block_count' is 0"),
    ("block_count", 10**9, "block_count' is 1,000,000,000"),
    ("context_length", 2**32 - 1, "context_length' is 4,294,967,295"),
    ("context_length", {"context_length": 1 << 20, "attention__key_length": 256}, "RoPE table of 268,435,456"),
    ("attention__head_count", 3, "multiple of"),
    ("rope__freq_base", float("nan"), "freq_base' must be a finite number"),
    ("rope__freq_base", float("inf"), "freq_base' must be a finite number"),
    ("attention__layer_norm_rms_epsilon", -1e-5, "epsilon' is -1e-05"),
    ("feed_forward_length", 1 << 30, "feed_forward_length' is"),
    ("vocab_size", 300, "the vocabulary has 400 tokens but 'llama.vocab_size' is 300"),
])
def test_metadata_out_of_bounds(tmp_path, spm_vocab, key, value, match):
    values = value if isinstance(value, dict) else {key: value}
    assert_refused(tiny(tmp_path, spm_vocab, key, **values), match, loads=("dense", "packed"))


def test_a_metadata_value_of_the_wrong_type(tmp_path, spm_vocab):
    def as_string(writer):
        writer.add_string("llama.block_count", "2")
    path = write_tiny_llama(tmp_path / "string.gguf", spm_vocab, "F32", metadata=as_string)
    assert_refused(path, "block_count' must be an integer, not str")


def _data_offset(path, name: str) -> int:
    return next(int(t.data_offset) for t in gguf.GGUFReader(path).tensors if t.name == name)


def test_a_tensor_offset_off_by_three(tmp_path, spm_vocab):
    path = write_tiny_llama(tmp_path / "shifted.gguf", spm_vocab, "F32")
    data = bytearray(path.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(len(name).to_bytes(8, "little") + name) + 8 + len(name)
    offset_field = at + 4 + 8 * int.from_bytes(data[at:at + 4], "little") + 4
    offset = int.from_bytes(data[offset_field:offset_field + 8], "little")
    data[offset_field:offset_field + 8] = (offset + 3).to_bytes(8, "little")
    path.write_bytes(bytes(data))
    assert_refused(path, "not a multiple of the alignment 32")


@pytest.mark.parametrize("weight_type,name,value", [
    ("F32", "blk.1.ffn_down.weight", np.float32("nan")),
    ("F32", "output_norm.weight", np.float32("inf")),
    ("F16", "blk.0.attn_k.weight", np.float16("-inf")),
    ("Q8_0", "blk.0.ffn_up.weight", np.float16("nan")),  # a block scale: the first 2 bytes of a block
    ("Q4_1", "token_embd.weight", np.float16("inf")),
])
def test_nan_or_infinite_weights_and_scales(tmp_path, spm_vocab, weight_type, name, value):
    path = write_tiny_llama(tmp_path / "nan.gguf", spm_vocab, weight_type)
    data = bytearray(path.read_bytes())
    at = _data_offset(path, name) + BLOCK_BYTES[weight_type] * 5  # the 6th value, or the 6th block's scale
    data[at:at + value.nbytes] = value.tobytes()
    path.write_bytes(bytes(data))
    assert GGUFFile(path).tensors[name]  # the container itself is sound
    assert_refused(path, f"NaN or infinite values in tensor '{name}'", loads=("dense", "packed"))


BLOCK_BYTES = {"F32": 4, "F16": 2, "Q8_0": 34, "Q4_1": 20}


def test_a_sound_file_passes_every_check(tiny_gguf_factory):
    info = model_info(tiny_gguf_factory("Q4_K"), check_tensors=True)
    assert info["tensor_check"]["checked"] == len(GGUFFile(tiny_gguf_factory("Q4_K")).tensors)


def test_a_chat_template_that_does_not_compile(tmp_path, spm_vocab):
    def template(writer):
        writer.add_chat_template("{% for m in messages %}{{ m.content }")
    path = write_tiny_llama(tmp_path / "template.gguf", spm_vocab, "F32", metadata=template)
    assert_refused(path, "chat template does not compile", loads=())


@pytest.mark.slow
def test_the_default_model_checks_quickly(default_gguf):
    start = time.perf_counter()
    info = model_info(default_gguf, check_tensors=True)
    assert info["tensor_check"]["checked"] == 272 and not info["tensor_check"]["unchecked"]
    assert time.perf_counter() - start < 2.0
