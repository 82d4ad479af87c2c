"""Beam search: keep the `num_beams` most probable continuations; deterministic.

Hypotheses end at EOS, a stop token id or a stop string; finished ones are ranked by
sum(log p) / length ** length_penalty (as Hugging Face). Beams live in the paged KV pool: a beam
shares its parent's blocks (the prompt is computed once) and copies only the partly filled
block it writes to when another beam holds it too (copy-on-write).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .completion import Completion
from .kv_pool import BlockPool
from .model_runner import forward_rows
from .sampling import SamplingParams
from .step_plan import RowPlan
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


class _BeamBlocks:
    """The block tables of the live beams; every table holds one reference to each of its blocks."""

    def __init__(self, pool: BlockPool, prompt_blocks: list[int]):
        self.pool, self.tables = pool, [prompt_blocks]

    def follow(self, parents: list[int]) -> None:
        """New beams continue these parents: share their blocks, drop the old tables."""
        old, self.tables = self.tables, [self.pool.retain(self.tables[p]) for p in parents]
        for table in old:
            self.pool.release(table)

    def writable(self, beam: int, position: int) -> list[int]:
        """Beam's table with a block of its own for `position` (a fresh one, or a copy of a shared one)."""
        table, bs = self.tables[beam], self.pool.block_size
        index = position // bs
        if index == len(table):
            table.extend(self.pool.allocate(1))
        elif self.pool.is_shared(table[index]):
            fresh = self.pool.allocate(1)[0]
            self.pool.copy_block(table[index], fresh)
            self.pool.release([table[index]])
            table[index] = fresh
        return table

    def release(self) -> None:
        for table in self.tables:
            self.pool.release(table)
        self.tables = []


@torch.inference_mode()
def beam_search(model, pool: BlockPool, tokenizer: Tokenizer, prompt: list[int], params: SamplingParams,
                prompt_index: int = 0) -> list[Completion]:
    """The `params.n` best of `params.num_beams` beams for one prompt (already checked), best first."""
    width = params.num_beams
    ends = set(params.stop_token_ids) | ({tokenizer.eos_id} if tokenizer.eos_id is not None else set())
    steps = min(model.args.max_seq_len - len(prompt), params.max_tokens)
    beams_blocks = _BeamBlocks(pool, pool.allocate(pool.blocks_for(len(prompt))))
    try:
        logits = forward_rows(model, pool, [RowPlan(0, prompt, 0, beams_blocks.tables[0])])
        beams, scores = [[]], torch.zeros(1)
        finished: list[_Hypothesis] = []
        for step in range(steps):
            candidates = (scores.unsqueeze(1) + torch.log_softmax(logits.float().cpu(), dim=-1)).flatten()
            parents, next_beams, next_scores = _expand(candidates, logits.shape[-1], beams, width, ends, tokenizer,
                                                       params, finished)
            if _done(finished, next_scores, len(next_beams[0]) if next_beams else 0, params) or not next_beams:
                break
            beams, scores = next_beams, torch.tensor(next_scores)
            beams_blocks.follow(parents)
            position = len(prompt) + step
            rows = [RowPlan(b, [beam[-1]], position, beams_blocks.writable(b, position)) for b, beam in enumerate(beams)]
            logits = forward_rows(model, pool, rows)
        else:
            finished += [_Hypothesis(b, s, "length") for b, s in zip(beams, scores.tolist())]
    finally:
        beams_blocks.release()
    best = sorted(finished, key=lambda h: h.score(params.length_penalty), reverse=True)[: params.n]
    return [Completion(_text(tokenizer, h.token_ids, params.stop)[0], h.token_ids, h.finish_reason, len(prompt),
                       prompt_index, i, h.logprob) for i, h in enumerate(best)]


def _expand(candidates: torch.Tensor, vocab: int, beams: list[list[int]], width: int, ends: set[int],
            tokenizer: Tokenizer, params: SamplingParams, finished: list[_Hypothesis]):
    """The best `width` continuations (parents, token lists, scores); ended ones go to `finished`."""
    parents, next_beams, next_scores = [], [], []
    top = candidates.topk(min(2 * width, candidates.numel()))
    for score, flat in zip(top.values.tolist(), top.indices.tolist()):
        parent, token = divmod(flat, vocab)
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
    return parents, next_beams, next_scores


def _done(finished: list[_Hypothesis], running: list[float], length: int, params: SamplingParams) -> bool:
    """Enough finished beams, and no running beam can still beat the worst of the best."""
    if len(finished) < params.num_beams:
        return False
    kept = sorted((h.score(params.length_penalty) for h in finished), reverse=True)[: params.num_beams]
    best_running = max(running, default=float("-inf")) / max(length, 1) ** params.length_penalty
    return best_running < kept[-1]
