"""`reason bench speculative`: prompt-lookup speculative decoding per strategy, as a person runs it.

Each strategy answers the same questions one at a time (a single stream, where drafting is meant
to help) on one loaded engine, with drafting off and on, alternating question by question so a
busy neighbour slows both sides alike. Reports the drafts' acceptance rate, the speed-up in
generated tokens per second, and how many answers came out the same. The free templates are used:
rows held to a grammar do not draft. Verifying a draft reads several positions in one forward pass,
so in plain bf16 a near-tie can round the other way than one token at a time would (as in any
batch); with `deterministic` the output is identical.
"""
from __future__ import annotations

import time

from prompts.template import load_shipped

from ..backends import engine_chat_model, model_fingerprint
from ..runner import run_question


def bench_speculative(questions: list[str], draft_tokens: int = 4, max_tokens: int = 256, model_path: str | None = None,
                      strategies: tuple[str, ...] = ("cot", "pal", "react"), wiki_tool=None, deterministic: bool = False,
                      progress=None) -> list[dict]:
    """Per strategy: tokens/s with and without drafts, acceptance rate, and whether the answers agreed.
    `wiki_tool` makes ReAct's tool (app/tools.py's wiki_tool_factory)."""
    from engine import load_model

    engine = load_model(model_path)
    fingerprint = model_fingerprint(engine.path)  # once, not per strategy and side
    results = []
    for strategy in strategies:
        template = load_shipped(f"{strategy}_free")  # the shipped template without a grammar
        knobs = {"max_tokens": max_tokens, "deterministic": deterministic or None}
        plain = engine_chat_model(engine, knobs, fingerprint)
        drafting = engine_chat_model(engine, {**knobs, "draft_tokens": draft_tokens}, fingerprint)
        row = {"strategy": strategy, "template": template.name, "questions": len(questions), "draft_tokens": draft_tokens,
               "plain_s": 0.0, "draft_s": 0.0, "plain_tokens": 0, "draft_tokens_out": 0, "drafted": 0, "accepted": 0,
               "same_answer": 0}
        for question in questions:
            answers = []
            for side, (model, info) in (("plain", plain), ("draft", drafting)):
                before = engine.stats()
                started = time.perf_counter()
                trace = run_question(strategy, question, model, info, template, wiki_tool=wiki_tool)
                row[f"{side}_s"] += time.perf_counter() - started
                row["plain_tokens" if side == "plain" else "draft_tokens_out"] += trace.completion_tokens
                if side == "draft":
                    after = engine.stats()
                    row["drafted"] += after["drafted_tokens"] - before["drafted_tokens"]
                    row["accepted"] += after["accepted_tokens"] - before["accepted_tokens"]
                answers.append(trace.answer)
            row["same_answer"] += answers[0] == answers[1]
        row["plain_tok_s"] = row["plain_tokens"] / row["plain_s"]
        row["draft_tok_s"] = row["draft_tokens_out"] / row["draft_s"]
        row["speedup"] = row["draft_tok_s"] / row["plain_tok_s"]
        row["acceptance"] = row["accepted"] / row["drafted"] if row["drafted"] else None
        results.append(row)
        if progress:
            progress(row)
    engine.close()
    return results
