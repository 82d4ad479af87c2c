"""What the Experiments page shows, read from the store: the configuration × metric matrix with intervals,
a chart of accuracy against tokens, the per-question diff of two configurations, and exports."""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from ..experiments_compare import Side, compare
from ..experiments_stats import ConfigResult, batch_results, config_names
from ..store import Store
from .outcome import OUTCOMES, outcome_of

MATRIX_COLUMNS = ["configuration", "accuracy", "95% CI", "n", "answered", "parse errors", "tool errors", "errors",
                  "mean tokens", "mean latency (s)", "tokens / correct"]
DIFF_COLUMNS = ["question id", "question", "expected", "A", "B"]
# Cell colours of the diff (WCAG AA on each other): passed green, failed red, neither grey.
CELL_STYLES = {"pass": "background-color: #d7f0dd; color: #0b5d1e", "fail": "background-color: #fbdede; color: #8a1414",
               "none": "background-color: #eceff3; color: #333"}
PALETTE = ("#1f5fbf", "#c4471d", "#2a8a3e", "#8a3fb3", "#b8860b", "#0f7f86", "#b3246b", "#555")


def interval_text(ci: tuple[float, float] | None) -> str:
    """A 95% interval as people read it: 49.0–94.3%."""
    return "–" if ci is None else f"{ci[0]:.1%}–{ci[1]:.1%}".replace("%–", "–")


def batch_choices(store: Store, limit: int = 100) -> list[tuple[str, str]]:
    """(label, batch id) of every batch, newest first: its short id, input and configurations."""
    out = []
    for batch in store.list_batches(limit=limit):
        names = config_names(batch)
        out.append((f"{batch['id'][-8:]} · {batch['input_name']} · {len(names)} configuration"
                    f"{'s' if len(names) != 1 else ''} ({', '.join(names)[:80]})", batch["id"]))
    return out


def matrix(results: list[ConfigResult]) -> pd.DataFrame:
    """One row per configuration; rates as percentages, the interval beside its accuracy."""
    percent = lambda value: "–" if value is None else f"{value:.1%}"  # noqa: E731
    rows = [[r.config, percent(r.accuracy), interval_text(r.ci95), r.scored, percent(r.answered_rate),
             percent(r.parse_error_rate), percent(r.tool_error_rate), percent(r.error_rate), round(r.mean_tokens, 1),
             round(r.mean_latency_ms / 1000, 2), "–" if r.tokens_per_correct is None else round(r.tokens_per_correct, 1)]
            for r in results]
    return pd.DataFrame(rows, columns=MATRIX_COLUMNS)


def chart(results: list[ConfigResult], width: int = 720, height: int = 320) -> str:
    """An SVG of accuracy (with its 95% interval as a whisker) against mean tokens per question."""
    shown = [r for r in results if r.accuracy is not None]
    if not shown:
        return '<p class="chart-empty">No scored runs yet: the chart needs questions with expected answers.</p>'
    left, right, top, bottom = 56, 24, 16, 44
    x_max = max(r.mean_tokens for r in shown) * 1.15 or 1.0
    x = lambda tokens: left + (width - left - right) * tokens / x_max  # noqa: E731
    y = lambda acc: top + (height - top - bottom) * (1 - acc)  # noqa: E731
    parts = [_axes(x, y, x_max, width, height, left, top, bottom)]
    parts += [_point(r, x, y, PALETTE[i % len(PALETTE)]) for i, r in enumerate(shown)]
    return (f'<svg class="experiments-chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="Accuracy against mean tokens per question, one point per configuration">{"".join(parts)}</svg>')


def _axes(x, y, x_max, width, height, left, top, bottom) -> str:
    grid = "".join(f'<line x1="{left}" x2="{width - 24}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="12">{v:.0%}</text>'
                   for v in (0, 0.25, 0.5, 0.75, 1))
    ticks = "".join(f'<text x="{x(t):.1f}" y="{height - bottom + 18}" text-anchor="middle" font-size="12">{t:.0f}</text>'
                    for t in (x_max * i / 4 for i in range(4)))
    return (f'{grid}{ticks}<text x="{(left + width) / 2:.0f}" y="{height - 6}" text-anchor="middle" font-size="13">'
            f'mean tokens per question</text><text x="14" y="{top + (height - top - bottom) / 2:.0f}" font-size="13" '
            f'text-anchor="middle" transform="rotate(-90 14 {top + (height - top - bottom) / 2:.0f})">accuracy</text>')


def _point(r: ConfigResult, x, y, colour: str) -> str:
    low, high = r.ci95 or (r.accuracy, r.accuracy)
    cx, name = x(r.mean_tokens), html.escape(r.config)
    title = f"{name}: accuracy {r.accuracy:.1%} (95% CI {interval_text(r.ci95)}), {r.mean_tokens:.0f} tokens, n={r.scored}"
    return (f'<g class="point" data-config="{name}"><title>{title}</title>'
            f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" stroke="{colour}" stroke-width="2"/>'
            f'<line x1="{cx - 5:.1f}" x2="{cx + 5:.1f}" y1="{y(low):.1f}" y2="{y(low):.1f}" stroke="{colour}"/>'
            f'<line x1="{cx - 5:.1f}" x2="{cx + 5:.1f}" y1="{y(high):.1f}" y2="{y(high):.1f}" stroke="{colour}"/>'
            f'<circle cx="{cx:.1f}" cy="{y(r.accuracy):.1f}" r="6" fill="{colour}"/>'
            f'<text x="{cx + 9:.1f}" y="{y(r.accuracy) - 8:.1f}" font-size="12" fill="{colour}">{name}</text></g>')


def diff(store: Store, batch_id: str, a: str, b: str, only_changed: bool = False) -> tuple[object, list, str]:
    """(coloured table, [[run id of A, run id of B] per row], the verdict line) for two configurations of a batch."""
    runs_a, runs_b = store.config_runs(batch_id, a), store.config_runs(batch_id, b)
    ids = list(runs_a) + [q for q in runs_b if q not in runs_a]
    if only_changed:
        ids = [q for q in ids if q in runs_a and q in runs_b and runs_a[q]["correct"] != runs_b[q]["correct"]]
    rows, run_ids = [], []
    for qid in ids:
        first = runs_a.get(qid) or runs_b[qid]
        rows.append([qid, first["question"], first["expected"] or "", _cell(runs_a.get(qid)), _cell(runs_b.get(qid))])
        run_ids.append([(runs_a.get(qid) or {}).get("run_id"), (runs_b.get(qid) or {}).get("run_id")])
    frame = pd.DataFrame(rows, columns=DIFF_COLUMNS)
    styled = frame.style.map(lambda text: CELL_STYLES[_kind(text)], subset=["A", "B"])
    return styled, run_ids, verdict(compare(store, Side(batch_id, a), Side(batch_id, b)), a, b)


def _cell(run: dict | None) -> str:
    """✓ 5 (right), ✗ 6 (wrong), ⚠ error…; empty when the configuration did not run the question."""
    if run is None:
        return ""
    outcome = outcome_of(run)
    return f"{outcome.mark} {run['answer'] if run['answer'] is not None else outcome.word}"


def _kind(text: str) -> str:
    if text.startswith(OUTCOMES["correct"].mark):
        return "pass"
    return "fail" if text.startswith((OUTCOMES["wrong"].mark, OUTCOMES["error"].mark, OUTCOMES["no_answer"].mark)) \
        else "none"


def verdict(result: dict, a: str, b: str) -> str:
    """A: name, accuracy [interval]; B: likewise; wins, losses, ties and the exact McNemar p-value."""
    sides = [f"<b>{label}</b> = {html.escape(name)}: {_percent(side['accuracy'])} "
             f"[{interval_text(tuple(side['ci95']) if side['ci95'] else None)}], n={side['n']}"
             for label, name, side in zip("AB", (a, b), result["sides"])]
    return (f'<div class="status-line">{" · ".join(sides)}<br>A wins {result["wins"]}, loses {result["losses"]}, '
            f'ties {result["ties"]} · exact McNemar p = {result["p_value"]:.3g}</div>')


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def export(store: Store, batch_id: str, folder: Path, kind: str) -> Path:
    """Write the batch's per-configuration results as CSV or JSON lines; returns the file."""
    results = batch_results(store, batch_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"experiment-{batch_id[-8:]}.{kind}"
    if kind == "csv":
        matrix(results).to_csv(path, index=False)
    else:
        path.write_text("".join(json.dumps({"batch": batch_id, **r.to_dict()}, ensure_ascii=False) + "\n"
                                for r in results), encoding="utf-8")
    return path
