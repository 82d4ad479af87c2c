"""Constrained generation with llguidance: a request's Constraint becomes a matcher that gives, each
step, the bitmask of tokens that keep the output inside the grammar (JSON schema, regex, choice,
Lark, GBNF). llguidance was chosen over xgrammar by measurement (README, "Structured generation"):
its grammars compile in ~1 ms where xgrammar's take 15–540 ms, so a per-request schema costs
nothing, and its masks take 25–270 µs per row. Grammars are cached by their text.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import llguidance
import torch
from llguidance.gbnf_to_lark import GbnfToLarkError, gbnf_to_lark

from .completion import ParamError
from .sampling_params import Constraint
from .tokenizer import CONTROL, Tokenizer

log = logging.getLogger(__name__)

CACHE_SIZE = 256  # compiled grammars kept, by their text
# Compact JSON, one space after separators: a small model left free to emit whitespace between
# tokens can ramble blanks until max_tokens cuts the object (the schema's own x-guidance wins).
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class _TokenizerView:
    """What llguidance needs of a tokenizer: every token's bytes (control tokens marked with a 0xFF
    prefix, llguidance's convention, so they never match text) and how text continues in tokens."""

    def __init__(self, tokenizer: Tokenizer):
        special = {i for i, kind in enumerate(tokenizer.token_types) if kind == CONTROL}
        self.tokens = [b"\xff" + tokenizer.token_bytes(i) if i in special else tokenizer.token_bytes(i)
                       for i in range(tokenizer.vocab_size)]
        self.eos_token_id, self.bos_token_id = tokenizer.eos_id, tokenizer.bos_id
        self.special_token_ids = sorted(special)
        self._tokenizer = tokenizer

    def __call__(self, text: bytes) -> list[int]:
        return self._tokenizer.encode_continuation(text.decode("utf-8", errors="replace"))


def grammar_of(constraint: Constraint) -> str:
    """llguidance's grammar (JSON text) for a constraint; ParamError when it cannot be read."""
    try:
        if constraint.kind == "json_schema":
            return llguidance.LLMatcher.grammar_from_json_schema(constraint.spec, defaults=JSON_OPTIONS)
        if constraint.kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(constraint.spec)
        if constraint.kind == "choice":
            choices = " | ".join(json.dumps(c) for c in constraint.spec)
            return llguidance.LLMatcher.grammar_from_lark(f"start: {choices}\n")
        lark = gbnf_to_lark(constraint.spec) if constraint.kind == "gbnf" else constraint.spec
        return llguidance.LLMatcher.grammar_from_lark(lark)
    except (ValueError, TypeError, RuntimeError, GbnfToLarkError) as exc:
        raise ParamError(f"the {constraint.kind} constraint cannot be compiled: {exc}", "constraint") from exc


class ConstraintCompiler:
    """Compiles and caches constraints for one tokenizer; thread-safe (requests arrive from any thread)."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._lltokenizer: llguidance.LLTokenizer | None = None  # built on first use: ~0.3 s for 49k tokens
        self._cache: OrderedDict[Constraint, str] = OrderedDict()
        self._lock = threading.Lock()

    def matcher(self, constraint: Constraint) -> llguidance.LLMatcher:
        """A fresh matcher at the start of the output; ParamError if the constraint is invalid."""
        grammar = self._grammar(constraint)
        matcher = llguidance.LLMatcher(self._llg_tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise ParamError(f"the {constraint.kind} constraint is invalid: {matcher.get_error()}", "constraint")
        return matcher

    def _grammar(self, constraint: Constraint) -> str:
        with self._lock:
            if constraint in self._cache:
                self._cache.move_to_end(constraint)
                return self._cache[constraint]
        grammar = grammar_of(constraint)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self._llg_tokenizer())
        if is_error:
            raise ParamError(f"the {constraint.kind} constraint is invalid: {messages[0]}", "constraint")
        with self._lock:
            self._cache[constraint] = grammar
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return grammar

    def _llg_tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._lltokenizer is None:
                wrapper = llguidance.TokenizerWrapper(_TokenizerView(self._tokenizer))
                self._lltokenizer = llguidance.LLTokenizer(wrapper, n_vocab=self._tokenizer.vocab_size)
            return self._lltokenizer


class MaskWorker:
    """Computes the allowed-token bitmasks of a step's constrained rows on another thread, so they are
    ready when the forward pass ends (llguidance's executor fills rows in parallel, outside the GIL)."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar-masks")
        self._executor = llguidance.LLExecutor()

    def start(self, matchers: list[llguidance.LLMatcher], vocab_size: int) -> Future:
        return self._pool.submit(self._fill, matchers, vocab_size)

    def _fill(self, matchers: list[llguidance.LLMatcher], vocab_size: int) -> torch.Tensor:
        # (not llguidance.torch: importing it compiles a kernel with torch.compile, which loads Triton)
        bitmask = torch.full((len(matchers), (vocab_size + 31) // 32), -1, dtype=torch.int32)
        self._executor.unsafe_compute_mask_ptr([(m, i) for i, m in enumerate(matchers)], bitmask.data_ptr(),
                                               bitmask.shape[1] * 4, len(matchers))
        return bitmask
