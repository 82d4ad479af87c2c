"""llama.cpp (llama-cpp-python) as the reference engine, loaded in-process on the same GGUF."""
from __future__ import annotations

import numpy as np


def llama_cpp_model(path, n_ctx: int = 512):
    from llama_cpp import Llama

    return Llama(str(path), n_ctx=n_ctx, logits_all=True, n_threads=2, n_batch=512, verbose=False, seed=0)


def llama_cpp_logits(llm, token_ids: list[int]) -> np.ndarray:
    """float32 logits for every position of one fresh forward pass: (len, vocab)."""
    llm.reset()
    llm.eval(token_ids)
    return np.array(llm.scores[: len(token_ids)], dtype=np.float32)


def llama_cpp_greedy(llm, token_ids: list[int], n: int) -> list[int]:
    """Greedy continuation of token ids, stopping early at EOS."""
    out = []
    for token in llm.generate(token_ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if token == llm.token_eos() or len(out) == n:
            break
        out.append(token)
    return out
