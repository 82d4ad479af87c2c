"""How many CPU threads a forward pass gets, chosen by measuring rather than by a fixed rule.

Small steps are dispatch-bound and run faster on one thread (measured: batch-1 decode 45 tok/s on
one thread of a 2-core CPU, 26 on two); large ones want every core — unless another program holds
a core, when an OpenMP team waits at each barrier for the thread that cannot run. So each step
size (a power-of-two bucket of tokens) keeps the measured seconds per token of each thread count
(an exponential average), uses the fastest, and now and then re-tries another count, so a
neighbour that comes or goes moves the choice.
"""
from __future__ import annotations

import math

RETRY_EVERY = 24  # steps of a bucket between re-trials of a slower thread count
SMOOTHING = 0.3  # weight of the newest measurement
SMALL_STEP_TOKENS = 8  # the prior: fewer tokens than this start on one thread


class ThreadChooser:
    def __init__(self, max_threads: int):
        self.counts = sorted({1, max(1, max_threads)})
        self._per_token: dict[tuple[int, int], float] = {}  # (bucket, threads) -> seconds per token
        self._steps: dict[int, int] = {}

    def choose(self, tokens: int) -> int:
        bucket = _bucket(tokens)
        step = self._steps.get(bucket, 0)
        self._steps[bucket] = step + 1
        untried = [n for n in self._prior_order(tokens) if (bucket, n) not in self._per_token]
        if untried:
            return untried[0]
        ranked = sorted(self.counts, key=lambda n: self._per_token[(bucket, n)])
        if len(ranked) > 1 and step % RETRY_EVERY == RETRY_EVERY - 1:
            return ranked[1]
        return ranked[0]

    def record(self, tokens: int, threads: int, seconds: float) -> None:
        key = (_bucket(tokens), threads)
        sample = seconds / max(tokens, 1)
        old = self._per_token.get(key)
        self._per_token[key] = sample if old is None else (1 - SMOOTHING) * old + SMOOTHING * sample

    def _prior_order(self, tokens: int) -> list[int]:
        return self.counts if tokens < SMALL_STEP_TOKENS else self.counts[::-1]


def _bucket(tokens: int) -> int:
    return int(math.log2(max(tokens, 1)))
