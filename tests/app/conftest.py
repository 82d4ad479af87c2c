import pytest

from tests.engine.tiny_gguf import TinyShape, train_sentencepiece, write_tiny_llama


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random Q8_0 model with a long context: few-shot prompts are long in a 400-piece vocabulary."""
    workdir = tmp_path_factory.mktemp("app-model")
    return str(write_tiny_llama(workdir / "tiny.gguf", train_sentencepiece(workdir), "Q8_0", shape=TinyShape(context=4096)))
