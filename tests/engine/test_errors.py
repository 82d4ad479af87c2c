"""Bad input gets one clear error, never a traceback from deep inside."""
import pytest

from engine import ContextLengthError, ModelFileError, SamplingParams, load_model
from engine.completion import check_prompt

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


def test_the_one_prompt_check_at_the_context_boundary():
    """context - 1 tokens leave one position to generate; exactly `context` can only be scored."""
    check_prompt([1] * 7, context=8, vocab_size=10)
    with pytest.raises(ContextLengthError, match="at most 7 to generate"):
        check_prompt([1] * 8, context=8, vocab_size=10)
    check_prompt([1] * 8, context=8, vocab_size=10, room=0)
    with pytest.raises(ContextLengthError, match="at most 8"):
        check_prompt([1] * 9, context=8, vocab_size=10, room=0)


def test_the_engine_applies_the_boundary(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("F32"))
    context = model.args.max_seq_len
    fits = [1] * (context - 1)
    assert len(model.submit(fits, SamplingParams(max_tokens=1)).result(timeout=60)[0].token_ids) == 1
    with pytest.raises(ContextLengthError):
        model.submit(fits + [1], SamplingParams(max_tokens=1))
    assert model.logits(fits + [1]).shape[0] == context


def test_bad_generation_arguments(tiny_gguf_factory):
    model = load_model(tiny_gguf_factory("F32"))
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate(["hi"], max_tokens=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits([1, 10**6])


def test_bad_device_and_dtype(tiny_gguf_factory):
    with pytest.raises(ValueError, match="dtype"):
        load_model(tiny_gguf_factory("F32"), device="cpu", dtype="int3")
