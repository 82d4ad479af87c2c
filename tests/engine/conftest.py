import pytest

from engine.loader import default_model_path

from .tiny_gguf import train_sentencepiece, write_tiny_llama

WEIGHT_TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


@pytest.fixture(scope="session")
def spm_vocab(tmp_path_factory):
    return train_sentencepiece(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="session")
def llama2_gguf(tmp_path_factory, spm_vocab):
    """LLaMA-2-shaped: SentencePiece vocab, untied output, n_kv_heads < n_heads, F16 weights."""
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "llama2-tiny.gguf", spm_vocab, "F16")


@pytest.fixture(scope="session")
def tiny_gguf_factory(tmp_path_factory, spm_vocab):
    made = {}

    def make(weight_type: str):
        if weight_type not in made:
            path = tmp_path_factory.mktemp("gguf") / f"tiny-{weight_type}.gguf"
            made[weight_type] = write_tiny_llama(path, spm_vocab, weight_type)
        return made[weight_type]

    return make


@pytest.fixture(scope="session")
def default_gguf():
    return default_model_path()
