"""Bad input gets one clear error, never a traceback from deep inside."""
import pytest

from engine import ContextLengthError, ModelFileError, load_model

from .tiny_gguf import TinyShape, write_tiny_llama


def test_missing_path(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "nope.gguf")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ModelFileError, match="is not a file"):
        load_model(tmp_path)


def test_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04 this is a zip, not a model" * 10)
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        load_model(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_gguf(tmp_path, tiny_gguf_factory, keep):
    data = tiny_gguf_factory("Q8_0").read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match="truncated|not a readable GGUF"):
        load_model(path)


def test_header_only_gguf(tmp_path, tiny_gguf_factory):
    path = tmp_path / "header.gguf"
    path.write_bytes(tiny_gguf_factory("Q8_0").read_bytes()[:64])
    with pytest.raises(ModelFileError):
        load_model(path)


def test_unsupported_architecture(tmp_path, spm_vocab):
    path = write_tiny_llama(tmp_path / "gemma.gguf", spm_vocab, "F32", arch="gemma")
    with pytest.raises(ModelFileError, match="architecture 'gemma' is not supported"):
        load_model(path)


def test_prompt_longer_than_the_context(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("F32"))
    too_long = "fox " * (TinyShape().context + 10)
    with pytest.raises(ContextLengthError, match="context"):
        model.generate([too_long], max_tokens=4)
    with pytest.raises(ContextLengthError, match="context"):
        model.logits(model.tokenizer.encode(too_long))


def test_bad_generation_arguments(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("F32"))
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate(["hi"], max_tokens=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits([1, 10**6])


def test_bad_device_and_dtype(tiny_gguf_factory):
    with pytest.raises(ValueError, match="dtype"):
        load_model(tiny_gguf_factory("F32"), device="cpu", dtype="int3")
