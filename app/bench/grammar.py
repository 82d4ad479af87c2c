"""`reason bench grammar`: the two structured-generation libraries vLLM and llama.cpp use, on our tokenizers.

For each constraint (a JSON schema, a regex, a GBNF grammar) and each vocabulary (the default
model's 49,152 tokens, and a 128,256-token one made by extending it with concatenated token pairs,
LLaMA-3's size), it walks a valid output token by token and reports, per library:
- compile: from the constraint's text to the first mask (llguidance through the engine's own
  ConstraintCompiler; xgrammar's GrammarCompiler with its cache off),
- mask µs: the time to fill one step's allowed-token bitmask (median and worst),
- correct: every token of the valid output was allowed, and the output may end there.
xgrammar is not a dependency of the product: `pip install xgrammar` to compare.
"""
from __future__ import annotations

import json
import random
import statistics
import time

import torch

LLAMA3_VOCAB = 128256
CASES = {  # name -> (our Constraint kind, its spec, a valid output); xgrammar reads the same spec
    "json_schema": ("json_schema", {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age", "tags"],
        "additionalProperties": False}, '{"name": "Ada Lovelace", "age": 36, "tags": ["math", "poetry"]}'),
    "regex": ("regex", r"\d{4}-\d{2}-\d{2}, [A-Z][a-z]+ \d+ (apples|pears)", "2026-11-30, Tom 12 apples"),
    # (the answer's lead-in holds a ':' no sentence has: llguidance's lexemes are greedy, so a lead-in
    # that a sentence could also spell would be read as a sentence; the shipped CoT grammar excludes it)
    "gbnf": ("gbnf", 'root ::= sentence+ "Answer: " [0-9]+ "."\nsentence ::= [A-Za-z ,0-9]+ ". "',
             "Tom has 3 boxes of 4 pencils. He gives away 5. Answer: 7."),
}


class ExtendedVocab:
    """The default tokenizer with pseudo-random concatenated token pairs appended up to `size` tokens:
    a LLaMA-3-sized vocabulary whose first ids still tokenize text as the original does."""

    def __init__(self, base, size: int, seed: int = 0):
        rng = random.Random(seed)
        ordinary = [i for i in range(base.vocab_size) if base.token_types[i] != 3]  # not control tokens
        extra = []
        while len(extra) < size - base.vocab_size:
            extra.append(base.token_bytes(rng.choice(ordinary)) + base.token_bytes(rng.choice(ordinary)))
        self._base, self._extra = base, extra
        self.token_types = list(base.token_types) + [1] * len(extra)
        self.vocab_size, self.eos_id, self.bos_id = size, base.eos_id, base.bos_id

    def token_bytes(self, i: int) -> bytes:
        return self._base.token_bytes(i) if i < self._base.vocab_size else self._extra[i - self._base.vocab_size]

    def encode_continuation(self, text: str) -> list[int]:
        return self._base.encode_continuation(text)


def bench_grammar(model_path: str | None = None, progress=None) -> list[dict]:
    from engine.gguf_file import GGUFFile
    from engine.loader import default_model_path
    from engine.tokenizer import Tokenizer

    base = Tokenizer.from_gguf(GGUFFile(model_path or default_model_path()))
    results = []
    for vocab in (base, ExtendedVocab(base, LLAMA3_VOCAB)):
        ours = _Llguidance(vocab)
        theirs = _Xgrammar(vocab)
        for case, (kind, spec, text) in CASES.items():
            ids = base.encode_continuation(text)
            for name, library in (("llguidance", ours), ("xgrammar", theirs)):
                if library.unavailable:
                    row = {"library": name, "vocab": vocab.vocab_size, "case": case, "error": library.unavailable}
                else:
                    row = {"library": name, "vocab": vocab.vocab_size, "case": case, **_walk(library, kind, spec, ids, vocab)}
                results.append(row)
                if progress:
                    progress(row)
    return results


def _walk(library, kind: str, spec, ids: list[int], vocab) -> dict:
    started = time.perf_counter()
    matcher = library.matcher(kind, spec)
    bitmask = torch.zeros(1, (vocab.vocab_size + 31) // 32, dtype=torch.int32)
    times, allowed = [], True
    for step, token in enumerate([*ids, vocab.eos_id]):
        t0 = time.perf_counter()
        library.fill(matcher, bitmask)
        elapsed = time.perf_counter() - t0
        if step == 0:
            compile_s = time.perf_counter() - started
        else:
            times.append(elapsed)
        if token == vocab.eos_id:
            allowed &= library.may_end(matcher, bitmask, token)
        else:
            allowed &= _allows(bitmask, token)
            library.accept(matcher, token)
    return {"compile_ms": 1000 * compile_s, "mask_us_median": 1e6 * statistics.median(times),
            "mask_us_max": 1e6 * max(times), "steps": len(times) + 1, "correct": allowed}


def _allows(bitmask: torch.Tensor, token: int) -> bool:
    return bool((int(bitmask[0, token // 32]) >> (token % 32)) & 1)


class _Llguidance:
    unavailable = None

    def __init__(self, vocab):
        from engine.grammar import ConstraintCompiler

        self._compiler = ConstraintCompiler(vocab)
        self._compiler.matcher(_constraint("regex", "a"))  # builds its token trie once (~0.3 s), as the engine does

    def matcher(self, kind, spec):
        return self._compiler.matcher(_constraint(kind, spec))

    @staticmethod
    def fill(matcher, bitmask):
        matcher.unsafe_compute_mask_ptr(bitmask.data_ptr(), bitmask.shape[1] * 4)

    @staticmethod
    def accept(matcher, token):
        assert matcher.consume_token(token), "llguidance refused a token of the valid output"

    @staticmethod
    def may_end(matcher, bitmask, eos: int) -> bool:
        return matcher.is_accepting()  # a finished grammar stops the matcher (the engine's stop rule reads it)


class _Xgrammar:
    def __init__(self, vocab):
        try:
            import xgrammar
        except ImportError:
            self.unavailable = "xgrammar is not installed (pip install xgrammar)"
            return
        self.unavailable = None
        self._xg = xgrammar
        tokens = [vocab.token_bytes(i) for i in range(vocab.vocab_size)]
        info = xgrammar.TokenizerInfo(tokens, xgrammar.VocabType.RAW, vocab_size=vocab.vocab_size,
                                      stop_token_ids=[vocab.eos_id])
        self._compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)

    def matcher(self, kind, spec):
        if kind == "json_schema":
            compiled = self._compiler.compile_json_schema(json.dumps(spec), any_whitespace=False)
        elif kind == "regex":
            compiled = self._compiler.compile_regex(spec)
        else:
            compiled = self._compiler.compile_grammar(spec)
        return self._xg.GrammarMatcher(compiled)

    @staticmethod
    def fill(matcher, bitmask):
        matcher.fill_next_token_bitmask(bitmask)

    @staticmethod
    def accept(matcher, token):
        assert matcher.accept_token(token), "xgrammar refused a token of the valid output"

    @staticmethod
    def may_end(matcher, bitmask, eos: int) -> bool:
        return _allows(bitmask, eos)


def _constraint(kind, spec):
    from engine.sampling_params import Constraint

    return Constraint(kind, json.dumps(spec) if isinstance(spec, dict) else spec)
