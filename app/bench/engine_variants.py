"""Our engine's options measured on the bench workload: speculative drafts, batch-invariant mode, a
sampled batch and a grammar-constrained one, each against the plain greedy run in the same process."""
from __future__ import annotations

import statistics
import time
from dataclasses import replace


def cot_constraint():
    """The shipped CoT template's grammar (free sentences, then "The answer is X."), as the engine takes it."""
    from engine.sampling_params import Constraint
    from prompts.template import load_shipped

    spec = load_shipped("cot").constraints["reasoning"]
    return Constraint(spec["kind"], spec["spec"])


# Each option runs right after a plain run, this many times: a busy neighbour slows both alike, and the
# median of three is not moved by one pair alone (the first constrained batch also builds the grammar's
# lexer states: every pair's ratio is kept and shown)
PAIRS = 3
BATCH_TOKENS = 32  # new tokens per prompt in the options' batches (the plain batch above has the full budget)


def measure_variants(engine, workload, greedy) -> dict:
    """Decode tok/s of one stream and batch tok/s for each option, each with its ratio to a plain run made
    just before it (the median over PAIRS pairs); the speculative acceptance rate."""
    from engine import SamplingParams

    prompt = workload.batch_ids[0]
    stream = {"draft4": replace(greedy, draft_tokens=4), "deterministic": replace(greedy, deterministic=True),
              "constrained": replace(greedy, constraint=cot_constraint())}
    short = replace(greedy, max_tokens=min(greedy.max_tokens, BATCH_TOKENS))
    batch = {"draft4": replace(short, draft_tokens=4), "deterministic": replace(short, deterministic=True),
             "constrained": replace(short, constraint=cot_constraint()),
             "sampled": SamplingParams(temperature=0.7, top_p=0.9, seed=0, max_tokens=short.max_tokens,
                                       logit_bias=greedy.logit_bias)}
    out = {}
    drafted, accepted = _speculation(engine)
    out.update(_paired("decode", stream, greedy, lambda params: _stream_tok_s(engine, prompt, params)))
    now = _speculation(engine)
    out["draft4_acceptance"] = (now[1] - accepted) / max(now[0] - drafted, 1)  # only draft4 runs draft
    out.update(_paired("batch", batch, short, lambda params: _batch_tok_s(engine, workload.batch_texts, params)))
    return out


def _paired(kind: str, options: dict, plain, measure) -> dict:
    out, plain_values = {}, []
    for name, params in options.items():
        values, ratios = [], []
        for _ in range(PAIRS):
            base = measure(plain)
            value = measure(params)
            plain_values.append(base)
            values.append(value)
            ratios.append(value / base if value and base else None)
        out[f"{kind}_{name}_tok_s"] = statistics.mean(v for v in values if v) if any(values) else None
        kept = [r for r in ratios if r]
        out[f"{kind}_{name}_ratio"] = statistics.median(kept) if kept else None
        out[f"{kind}_{name}_ratios"] = ratios
    out[f"{kind}_plain_tok_s"] = statistics.mean(v for v in plain_values if v)
    out[f"{kind}_plain_ratio"] = 1.0
    return out


def _batch_tok_s(engine, texts: list[str], params) -> float:
    started = time.perf_counter()
    generated = sum(len(c.token_ids) for c in engine.generate(texts, params))
    return generated / (time.perf_counter() - started)


def _stream_tok_s(engine, ids: list[int], params) -> float | None:
    start, times = time.perf_counter(), []
    for event in engine.submit(ids, params):
        if event.token_id is not None:
            times.append(time.perf_counter() - start)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None


def _speculation(engine) -> tuple[int, int]:
    stats = engine.stats()
    return stats["drafted_tokens"], stats["accepted_tokens"]


VARIANT_ROWS = (
    ("decode tok/s, plain greedy", "decode_plain_tok_s"),
    ("decode tok/s, speculative (4 draft tokens)", "decode_draft4_tok_s"),
    ("  draft acceptance rate", "draft4_acceptance"),
    ("decode tok/s, batch-invariant", "decode_deterministic_tok_s"),
    ("decode tok/s, CoT grammar constraint", "decode_constrained_tok_s"),
    (f"batch tok/s (<= {BATCH_TOKENS} tokens each), plain greedy", "batch_plain_tok_s"),
    ("batch tok/s, speculative (4 draft tokens)", "batch_draft4_tok_s"),
    ("batch tok/s, batch-invariant", "batch_deterministic_tok_s"),
    ("batch tok/s, CoT grammar constraint", "batch_constrained_tok_s"),
    ("batch tok/s, sampled (T 0.7, top-p 0.9)", "batch_sampled_tok_s"),
)


def format_variants(ours: dict) -> str:
    """Our options, each with its ratio to the plain runs made just before it (median of the pairs)."""
    variants = ours.get("variants")
    if not variants:
        return ""
    lines = ["", f"{'our options (same process)':<44} {'value':>10} {'vs plain':>9}  pairs, in order"]
    for label, key in VARIANT_ROWS:
        value = variants.get(key)
        is_rate = key.endswith("acceptance")
        cell = "-" if value is None else (f"{value:.0%}" if is_rate else f"{value:.1f}")
        ratio = variants.get(key.replace("_tok_s", "_ratio"))
        ratio = "" if is_rate or ratio is None else f"{ratio:.2f}x"
        pairs = [] if is_rate else variants.get(key.replace("_tok_s", "_ratios")) or []
        spread = " ".join("-" if r is None else f"{r:.2f}" for r in pairs)
        lines.append(f"{label:<44} {cell:>10} {ratio:>9}  {spread}".rstrip())
    return "\n".join(lines)
