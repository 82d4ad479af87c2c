"""Beam search: keep the `num_beams` most probable continuations; deterministic.

Hypotheses end at EOS, a stop token id or a stop string; finished ones are ranked by
sum(log p) / length ** length_penalty (as Hugging Face). The KV cache holds one row per beam
and is reordered to follow the surviving beams' parents each step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .generate import Completion, check_prompts
from .sampling import SamplingParams
from .text_stream import TextStream
from .tokenizer import Tokenizer


@dataclass
class _Hypothesis:
    token_ids: list[int]
    logprob: float
    finish_reason: str

    def score(self, length_penalty: float) -> float:
        return self.logprob / max(len(self.token_ids), 1) ** length_penalty


def _text(tokenizer: Tokenizer, token_ids: list[int], stop: list[str]) -> tuple[str, bool]:
    stream = TextStream(stop)
    for t in token_ids:
        stream.feed(tokenizer.token_bytes(t))
    stream.finish()
    return stream.text, stream.stopped


@torch.inference_mode()
def beam_search(model, tokenizer: Tokenizer, prompt: list[int], params: SamplingParams, prompt_index: int = 0) -> list[Completion]:
    """The `params.n` best of `params.num_beams` beams for one prompt, best first."""
    check_prompts([prompt], model.args.max_seq_len)
    width, device = params.num_beams, model.tok_embeddings.weight.device
    ends = set(params.stop_token_ids) | ({tokenizer.eos_id} if tokenizer.eos_id is not None else set())
    cache_len = min(model.args.max_seq_len, len(prompt) + params.max_tokens)
    model.setup_cache(width, cache_len)
    try:
        tokens = torch.tensor([prompt] * width, device=device)
        logits = model(tokens, torch.arange(len(prompt), device=device).expand(width, -1))[:, -1]
        beams = [[] for _ in range(width)]
        scores = torch.full((width,), float("-inf"), device=device)
        scores[0] = 0.0  # all beams start identical: expand only the first
        finished: list[_Hypothesis] = []
        for step in range(cache_len - len(prompt)):
            candidates = (scores.unsqueeze(1) + torch.log_softmax(logits.float(), dim=-1)).flatten()
            top = candidates.topk(2 * width)
            parents, next_beams, next_scores = [], [], []
            for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                parent, token = divmod(flat, logits.shape[-1])
                seq = beams[parent] + [token]
                if token in ends:
                    finished.append(_Hypothesis(beams[parent], score, "stop"))
                    continue
                if _text(tokenizer, seq, params.stop)[1]:
                    finished.append(_Hypothesis(seq, score, "stop"))
                    continue
                parents.append(parent)
                next_beams.append(seq)
                next_scores.append(score)
                if len(next_beams) == width:
                    break
            if _done(finished, next_scores, len(next_beams[0]) if next_beams else 0, params) or not next_beams:
                break
            beams, scores = next_beams, torch.tensor(next_scores, device=device)
            model.reorder_cache(torch.tensor(parents, device=device))
            positions = torch.full((width, 1), len(prompt) + step, device=device)
            logits = model(torch.tensor([b[-1] for b in beams], device=device).unsqueeze(1), positions)[:, -1]
        else:
            finished += [_Hypothesis(b, s, "length") for b, s in zip(beams, scores.tolist())]
    finally:
        model.clear_cache()
    best = sorted(finished, key=lambda h: h.score(params.length_penalty), reverse=True)[: params.n]
    return [Completion(_text(tokenizer, h.token_ids, params.stop)[0], h.token_ids, h.finish_reason, len(prompt),
                       prompt_index, i, h.logprob) for i, h in enumerate(best)]


def _done(finished: list[_Hypothesis], running: list[float], length: int, params: SamplingParams) -> bool:
    """Enough finished beams, and no running beam can still beat the worst of the best."""
    if len(finished) < params.num_beams:
        return False
    kept = sorted((h.score(params.length_penalty) for h in finished), reverse=True)[: params.num_beams]
    best_running = max(running, default=float("-inf")) / max(length, 1) ** params.length_penalty
    return best_running < kept[-1]
