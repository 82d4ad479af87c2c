"""Batched generation with a KV cache: prefill all prompts, then decode one token a step.

Prompts of different lengths are right-padded; each row decodes at its own position, and the
causal mask hides the padded slots until they are overwritten. Every row carries its own
SamplingParams; `n` samples of one prompt are `n` rows.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .model import Transformer
from .sampling import SamplerState, SamplingParams, sample, top_logprobs
from .text_stream import TextStream
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Completion:
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" (EOS, a stop id or a stop string) or "length"
    prompt_tokens: int = 0
    prompt_index: int = 0  # which prompt this completes
    index: int = 0  # which of its n samples (or beams, best first)
    cumulative_logprob: float = 0.0  # sum of the model's log-probabilities of token_ids
    logprobs: list[dict] | None = None  # per token: {"token", "logprob", "top": {id: logprob}}


class ContextLengthError(ValueError):
    pass


@dataclass
class _Row:
    prompt: list[int]
    params: SamplingParams
    sampler: SamplerState
    stream: TextStream
    prompt_index: int
    index: int
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    cumulative_logprob: float = 0.0
    finish_reason: str | None = None


def check_prompts(prompts: list[list[int]], context: int) -> None:
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty")
        if len(p) >= context:
            raise ContextLengthError(f"prompt {i} has {len(p)} tokens; the model's context is {context}")


def _rows(prompts: list[list[int]], params: list[SamplingParams]) -> list[_Row]:
    rows = []
    for i, (prompt, p) in enumerate(zip(prompts, params)):
        for j in range(p.n):
            seed = None if p.seed is None else p.seed + j
            rows.append(_Row(prompt, p, SamplerState.start(p, prompt, seed), TextStream(p.stop), i, j))
    return rows


@torch.inference_mode()
def generate(model: Transformer, tokenizer: Tokenizer, prompts: list[list[int]],
             params: list[SamplingParams]) -> list[Completion]:
    """Completions of tokenized prompts, `n` per prompt, in prompt order."""
    check_prompts(prompts, model.args.max_seq_len)
    rows = _rows(prompts, params)
    eos = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
    device = model.tok_embeddings.weight.device
    cache_len = min(model.args.max_seq_len, max(len(r.prompt) + r.params.max_tokens for r in rows))
    model.setup_cache(len(rows), cache_len)
    try:
        logits = _prefill(model, [r.prompt for r in rows], device)
        for step in range(cache_len):
            next_ids = sample(logits, [r.sampler for r in rows])
            _accept(rows, logits, next_ids, tokenizer, eos, cache_len)
            if all(r.finish_reason for r in rows):
                break
            positions = torch.tensor([[min(len(r.prompt) + step, cache_len - 1)] for r in rows], device=device)
            logits = model(next_ids.view(-1, 1).to(device), positions)[:, -1]
    finally:
        model.clear_cache()
    return [_completion(r) for r in rows]


def _prefill(model: Transformer, prompts: list[list[int]], device) -> torch.Tensor:
    """Logits (B, vocab) at each prompt's last token."""
    width = max(len(p) for p in prompts)
    tokens = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = torch.tensor(p)
    positions = torch.arange(width, device=device).expand(len(prompts), -1)
    logits = model(tokens, positions)  # (B, width, vocab)
    last = torch.tensor([len(p) - 1 for p in prompts], device=device)
    return logits[torch.arange(len(prompts), device=device), last]


def _accept(rows, logits, next_ids, tokenizer, eos, cache_len) -> None:
    want = max((r.params.logprobs or 0) for r in rows)
    scored = top_logprobs(logits, next_ids, want)
    for row, token, score in zip(rows, next_ids.tolist(), scored):
        if row.finish_reason:
            continue
        if token in eos or token in row.params.stop_token_ids:
            row.finish_reason = "stop"
            continue
        row.sampler.accept(token)
        row.completion_ids.append(token)
        row.cumulative_logprob += score["logprob"]
        if row.params.logprobs is not None:
            top = dict(list(score["top"].items())[: row.params.logprobs])
            row.logprobs.append({**score, "top": top})
        row.stream.feed(tokenizer.token_bytes(token))
        if row.stream.stopped:
            row.finish_reason = "stop"
        elif len(row.completion_ids) >= row.params.max_tokens or len(row.prompt) + len(row.completion_ids) >= cache_len:
            row.finish_reason = "length"


def _completion(row: _Row) -> Completion:
    row.stream.finish()
    return Completion(row.stream.text, row.completion_ids, row.finish_reason or "length", len(row.prompt),
                      row.prompt_index, row.index, row.cumulative_logprob,
                      row.logprobs if row.params.logprobs is not None else None)
