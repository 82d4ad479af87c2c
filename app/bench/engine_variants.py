"""Our engine's options measured on the bench workload: speculative drafts, batch-invariant mode, a
sampled batch and a grammar-constrained one, each against the plain greedy run in the same process."""
from __future__ import annotations

import time
from dataclasses import replace


def cot_constraint():
    """The shipped CoT template's grammar (free sentences, then "The answer is X."), as the engine takes it."""
    from engine.sampling_params import Constraint
    from prompts.template import load_shipped

    spec = load_shipped("cot").constraints["reasoning"]
    return Constraint(spec["kind"], spec["spec"])


def measure_variants(engine, workload, greedy) -> dict:
    """Decode tok/s of one stream and batch tok/s for each option; the speculative acceptance rate."""
    from engine import SamplingParams

    prompt = workload.batch_ids[0]
    stream = {"plain": greedy, "draft4": replace(greedy, draft_tokens=4),
              "deterministic": replace(greedy, deterministic=True),
              "constrained": replace(greedy, constraint=cot_constraint())}
    batch = {**stream, "sampled": SamplingParams(temperature=0.7, top_p=0.9, seed=0, max_tokens=greedy.max_tokens,
                                                 logit_bias=greedy.logit_bias)}
    out = {}
    for name, params in stream.items():
        drafted, accepted = _speculation(engine)
        out[f"decode_{name}_tok_s"] = _stream_tok_s(engine, prompt, params)
        if name == "draft4":
            now = _speculation(engine)
            out["draft4_acceptance"] = (now[1] - accepted) / max(now[0] - drafted, 1)
    for name, params in batch.items():
        started = time.perf_counter()
        generated = sum(len(c.token_ids) for c in engine.generate(workload.batch_texts, params))
        out[f"batch_{name}_tok_s"] = generated / (time.perf_counter() - started)
    return out


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
    ("batch tok/s, plain greedy", "batch_plain_tok_s"),
    ("batch tok/s, speculative (4 draft tokens)", "batch_draft4_tok_s"),
    ("batch tok/s, batch-invariant", "batch_deterministic_tok_s"),
    ("batch tok/s, CoT grammar constraint", "batch_constrained_tok_s"),
    ("batch tok/s, sampled (T 0.7, top-p 0.9)", "batch_sampled_tok_s"),
)


def format_variants(ours: dict) -> str:
    """Our options, each with its ratio to the plain run of the same kind (decode or batch)."""
    variants = ours.get("variants")
    if not variants:
        return ""
    lines = ["", f"{'our options (same process)':<44} {'value':>10} {'vs plain':>9}"]
    for label, key in VARIANT_ROWS:
        value = variants.get(key)
        plain = variants.get(f"{key.split('_')[0]}_plain_tok_s")
        is_rate = key.endswith("acceptance")
        cell = "-" if value is None else (f"{value:.0%}" if is_rate else f"{value:.1f}")
        ratio = "" if is_rate or not value or not plain else f"{value / plain:.2f}x"
        lines.append(f"{label:<44} {cell:>10} {ratio:>9}")
    return "\n".join(lines)
