"""`reason model-info [--check]` on malformed model files: exit 1 with one line naming the file and the
problem, never a traceback and never 0 (issue 17); a sound file passes the weight check."""
import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from app.cli import cli
from tests.engine.tiny_gguf import write_tiny_llama


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    from tests.engine.tiny_gguf import train_sentencepiece

    return train_sentencepiece(tmp_path_factory.mktemp("spm"))


def _override(key: str, value):
    kind = gguf.GGUFValueType.FLOAT32 if isinstance(value, float) else gguf.GGUFValueType.UINT32
    return lambda writer: writer.add_key_value(key, value, kind)


def _nan_weight(path):
    name = "blk.0.ffn_up.weight"
    offset = next(int(t.data_offset) for t in gguf.GGUFReader(path).tensors if t.name == name)
    data = bytearray(path.read_bytes())
    data[offset:offset + 2] = np.float16("nan").tobytes()  # the first block's scale
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case,metadata,corrupt,message", [
    ("zero-heads", _override("llama.attention.head_count", 0), None, "head_count' is 0"),
    ("huge-context", _override("llama.context_length", 2**32 - 1), None, "context_length' is 4,294,967,295"),
    ("nan-rope", _override("llama.rope.freq_base", float("nan")), None, "must be a finite number"),
    ("short-vocab", _override("llama.vocab_size", 300), None, "has 400 tokens"),
    ("nan-weight", None, _nan_weight, "NaN or infinite values in tensor 'blk.0.ffn_up.weight'"),
])
def test_a_bad_file_exits_1_naming_the_problem(tmp_path, vocab, case, metadata, corrupt, message):
    path = write_tiny_llama(tmp_path / f"{case}.gguf", vocab, "Q8_0", metadata=metadata)
    if corrupt is not None:
        corrupt(path)
    result = CliRunner().invoke(cli, ["model-info", "--check", "--model", str(path)])
    assert result.exit_code == 1 and message in result.output and str(path) in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


def test_a_sound_file_passes_the_check(tmp_path, vocab):
    path = write_tiny_llama(tmp_path / "sound.gguf", vocab, "Q4_K")
    result = CliRunner().invoke(cli, ["model-info", "--check", "--model", str(path)])
    assert result.exit_code == 0 and "checked, no NaN or infinity" in result.output
    plain = CliRunner().invoke(cli, ["model-info", "--model", str(path)])
    assert plain.exit_code == 0 and "tensors" not in plain.output  # the weights are read only with --check
