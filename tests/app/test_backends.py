"""Backends: the llama.cpp one serialises calls; bad choices get clear errors; fingerprints tell files apart."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.backends import BackendChoice, chat_model, model_fingerprint


def test_llama_cpp_backend_survives_concurrent_callers(tiny_model):
    model, info = chat_model(BackendChoice("llamacpp", str(tiny_model), sampling={"max_tokens": 4}))
    assert info.backend == "llamacpp" and info.model_hash
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda q: model.invoke(q).content, ["a", "b", "c", "d"]))
    assert len(replies) == 4 and all(isinstance(r, str) for r in replies)


def test_engine_backend_records_model_and_sampling(tiny_model):
    model, info = chat_model(BackendChoice("engine", str(tiny_model), "cpu", None, {"temperature": 0.5, "max_tokens": 3}))
    assert info.backend == "engine" and info.sampling["temperature"] == 0.5 and info.model_hash == model_fingerprint(tiny_model)
    assert model.invoke("hi").usage_metadata["output_tokens"] <= 3


def test_unknown_backend_and_missing_file():
    with pytest.raises(ValueError, match="not available"):
        chat_model(BackendChoice("magic"))
    with pytest.raises(ValueError, match="model file not found"):
        chat_model(BackendChoice("llamacpp", "/no/such.gguf"))


def test_fingerprints_differ_between_files(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF" + b"\0" * 5000)
    b.write_bytes(b"GGUF" + b"\0" * 4999 + b"\1")
    assert model_fingerprint(a) != model_fingerprint(b) and len(model_fingerprint(a)) == 16
