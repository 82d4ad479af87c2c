"""`reason perplexity`: our engine's perplexity on a text, and llama.cpp's on the same GGUF and text."""
from __future__ import annotations

from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

from engine.perplexity import Perplexity, perplexity


def default_text() -> str:
    """A text of ~1,600 tokens written for this project (nothing is downloaded)."""
    return files("app").joinpath("data/perplexity.txt").read_text(encoding="utf-8")


def reference_perplexity(model_path: str | Path, text: str, ctx: int, progress=None) -> Perplexity:
    """llama.cpp (llama-cpp-python) on the same file, windows and scoring as ours."""
    import numpy as np
    import torch
    from llama_cpp import Llama

    llm = Llama(str(model_path), n_ctx=ctx, n_batch=ctx, logits_all=True, n_threads=2, verbose=False)
    add_bos = llm._model.add_bos_token()

    def logits_of(window: list[int]) -> torch.Tensor:
        llm.reset()
        llm.eval(window)
        return torch.from_numpy(np.array(llm.scores[:len(window)], dtype=np.float32))

    tokens = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
    return perplexity(logits_of, tokens, ctx, llm.token_bos() if add_bos else None, progress)


def report(ours: Perplexity, reference: Perplexity | None, label: str) -> dict:
    out = {"ours": {**asdict(ours), "engine": label}}
    if reference is not None:
        out["llama_cpp"] = asdict(reference)
        out["ratio"] = ours.value / reference.value
    return out
