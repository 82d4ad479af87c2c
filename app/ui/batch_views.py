"""What the Batch page shows, read from the store: the batch list, results in input order, accuracy,
progress, the upload's check and the template versions a batch will use."""
from __future__ import annotations

import functools
import html
from pathlib import Path

import pandas as pd

from prompts.template import TemplateError, parse_template, shipped_template_names

from ..batch_input import Fields, read_batch_input
from ..experiments_stats import batch_results, config_names
from .batches import BatchManager
from .experiments_views import interval_text
from .outcome import OUTCOMES, outcome_of, plain_status, status_line
from .state import AppState

BATCH_COLUMNS = ["batch", "file", "status", "done", "started", "id"]
RESULT_COLUMNS = ["question id", "strategy", "status", "answer", "expected", "correct", "tokens", "seconds", "question",
                  "run id"]
ACCURACY_COLUMNS = ["strategy", "accuracy", "95% CI", "answered", "total"]  # "strategy": the configuration's name
SHOWN_PROBLEMS = 8


def batches_table(manager: BatchManager) -> pd.DataFrame:
    """The batches, newest first, each with whether it runs now and how far it is (read afresh on every tick)."""
    rows = []
    for b in manager.state.store.list_batches(limit=50):
        running = manager.is_running(b["id"])
        done = _done(manager, b["id"]) if running else b["done"]
        rows.append([b["id"][-8:], b["input_name"], "running" if running else _ended(b["status"]), f"{done}/{b['total']}",
                     (b["created_at"] or "")[:19].replace("T", " "), b["id"]])
    return pd.DataFrame(rows, columns=BATCH_COLUMNS)


def _done(manager: BatchManager, batch_id: str) -> int:
    """Ended runs of a running batch (its stored count is updated only when it ends)."""
    return sum(1 for r in manager.state.store.search_runs(batch_id=batch_id, limit=None) if r["status"] != "running")


def _ended(status: str) -> str:
    return "interrupted (resume it)" if status == "running" else status  # left running by a server that stopped


@functools.lru_cache(maxsize=16)
def _input_order(path: str, mtime: float, fields: tuple) -> dict[str, int]:
    return {q.id: i for i, q in enumerate(read_batch_input(path, Fields(**dict(fields))).questions)}


def _order(batch: dict) -> dict[str, int]:
    """Question id -> its position in the batch's input, read with its fields ({} when the input is gone)."""
    settings = batch.get("settings") or {}
    path, fields = settings.get("input_path"), tuple(sorted((settings.get("fields") or {}).items()))
    if not path or not Path(path).exists():
        return {}
    try:
        return _input_order(path, Path(path).stat().st_mtime, fields)
    except ValueError:
        return {}


def results(manager: BatchManager, batch: dict) -> pd.DataFrame:
    """The batch's runs so far (finished and running), in input order, strategy by strategy."""
    runs = list(reversed(manager.state.store.search_runs(batch_id=batch["id"], limit=None)))
    order, rank = _order(batch), {name: i for i, name in enumerate(config_names(batch))}
    runs.sort(key=lambda r: (order.get(r["question_id"], len(order)), rank.get(r["config"] or r["strategy"], len(rank))))
    rows = [[r["question_id"], r["config"] or r["strategy"], f"{outcome_of(r).mark} {outcome_of(r).key}", r["answer"],
             r["expected"], {True: "✓", False: "✗"}.get(r["correct"], ""), r["prompt_tokens"] + r["completion_tokens"],
             round((r["duration_ms"] or 0) / 1000, 1), r["question"], r["id"]] for r in runs]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def accuracy(manager: BatchManager, batch_id: str) -> pd.DataFrame:
    """Per configuration (a plain batch's: its strategies): accuracy, its 95% interval, answered runs and total."""
    rows = batch_results(manager.state.store, batch_id)
    return pd.DataFrame([[r.config, round(r.accuracy or 0.0, 3), interval_text(r.ci95), round(r.answered_rate * r.total),
                          r.total] for r in rows], columns=ACCURACY_COLUMNS)



def progress_line(manager: BatchManager, batch: dict, done: int) -> str:
    """One line: the batch, whether it runs, how far it is, its error and skipped rows."""
    running, entry = manager.is_running(batch["id"]), manager.running.get(batch["id"])
    if running:
        state, outcome = "running", OUTCOMES["running"]
    elif entry and entry.error:
        state, outcome = "failed", OUTCOMES["error"]
    else:
        state = _ended(batch["status"])
        outcome = OUTCOMES["ok"] if state == "finished" else OUTCOMES["stopped"]
    line = f"<b>Batch {batch['id'][-8:]}</b> · {html.escape(batch['input_name'])} · {state} · <b>{done}/{batch['total']}</b> done"
    if entry and entry.error:
        line += f" · error: {html.escape(entry.error)}"
    if entry and entry.problems:
        line += f" · skipped rows: {html.escape('; '.join(entry.problems[:5]))}"
    return status_line(outcome, line)


def upload_check(path: str | None) -> str:
    """What an uploaded file holds, said at once: its usable questions, and each bad row by line number."""
    if not path:
        return ""
    name = html.escape(Path(path).name)
    try:
        source = read_batch_input(path)
    except ValueError as exc:
        return status_line(OUTCOMES["error"], f"{name}: {html.escape(str(exc))}")
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in source.problems[:SHOWN_PROBLEMS])
    more = f"<li>… and {len(source.problems) - SHOWN_PROBLEMS} more</li>" if len(source.problems) > SHOWN_PROBLEMS else ""
    listed = f"<ul>{problems}{more}</ul>" if problems else ""
    count = f"{name}: {len(source.questions)} usable question{'s' if len(source.questions) != 1 else ''}"
    if not source.questions:
        return status_line(OUTCOMES["error"], f"{count}; nothing can run.{listed}")
    if source.problems:
        return status_line(OUTCOMES["no_answer"], f"{count}; {len(source.problems)} row(s) will be skipped:{listed}")
    return status_line(OUTCOMES["ok"], count)


def template_options(state: AppState) -> list[str]:
    """NAME@VERSION of every stored template version, for the batch's template picker."""
    return [f"{name}@{v['version']}" for name in shipped_template_names() for v in state.store.template_versions(name)]


def chosen_templates(state: AppState, strategies: list[str], specs: list[str]) -> dict[str, str]:
    """strategy -> NAME@VERSION picked for it; TemplateError for a pick no chosen strategy uses, or two for one."""
    chosen: dict[str, str] = {}
    for spec in specs or []:
        name, _, version = spec.partition("@")
        strategy = parse_template(state.store.get_template(name, int(version))).strategy
        if strategy not in strategies:
            raise TemplateError(f"{spec} is a {strategy} template, and {strategy} is not one of the chosen strategies")
        if strategy in chosen:
            raise TemplateError(f"{chosen[strategy]} and {spec} are both for {strategy}: pick one")
        chosen[strategy] = spec
    return chosen


def templates_in_use(state: AppState, strategies: list[str], specs: list[str]) -> str:
    """Which template version each chosen strategy will run."""
    try:
        chosen = chosen_templates(state, strategies, specs)
        used = [(s, state.template(s, chosen.get(s))) for s in strategies or []]
    except TemplateError as exc:
        return status_line(OUTCOMES["error"], html.escape(str(exc)))
    parts = [f"{s} → <b>{t.name}@{t.version}</b>{'' if s in chosen else ' (default)'}" for s, t in used]
    return plain_status("Will use: " + (" · ".join(parts) if parts else "pick a strategy"))
