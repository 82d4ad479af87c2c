"""`reason batch` (an experiment: every question × configuration), `reason compare A B` and `reason batches`."""
from __future__ import annotations

import json

import click

from prompts.voting import STOP_RULES

from .cli_options import API_KEY_OPTION, BACKEND_OPTION, DEVICE_OPTION, DTYPE_OPTION, MODEL_OPTION, sampling_options
from .runner import STRATEGIES

FAIL_UNDER_EXIT = 3  # a CI gate's "below the bar", told apart from errors (1) and usage mistakes (2)


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("--strategy", "strategies", multiple=True, type=click.Choice(STRATEGIES),
              help="Repeatable: each question runs with each strategy.")
@click.option("--template", "templates", multiple=True, metavar="NAME[@VERSION]",
              help="Repeatable: each template version is a configuration of its strategy (implies the strategy).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="A YAML sweep: strategies × templates × backends/models × sampling settings (see the README).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True, help="Results, one JSON line per run.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Questions in flight (default 4; with several servers, servers × --server-concurrency).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N questions.")
@click.option("--resume", "resume_id", default=None,
              help="Continue a batch: only unfinished questions (and those a server failed) run, with its configurations.")
@click.option("--self-consistency", type=click.IntRange(min=1), default=None, help="Sample K paths and vote (cot, pal).")
@click.option("--sc-stop", type=click.Choice(STOP_RULES), default=None,
              help="CoT: sample in rounds and stop once the vote is decided (overtake: never changes the answer).")
@click.option("--sc-weighted", is_flag=True, help="CoT: weight each path's vote by its probability.")
@click.option("--sc-round", type=click.IntRange(min=1), default=2, show_default=True, help="Paths per adaptive round.")
@click.option("--wiki", type=click.Choice(["auto", "offline", "live"]), default="auto", show_default=True)
@click.option("--question-field", default="question", show_default=True, help="The question's column (a.b: nested).")
@click.option("--answer-field", default="answer", show_default=True, help="The expected answer's column.")
@click.option("--id-field", default="id", show_default=True, help="The id's column (default ids: line-N / row-N).")
@click.option("--answer-pattern", default=None, metavar="REGEX",
              help=r"Read the expected answer with this regex (group 1), e.g. '####\s*(.+)$' for GSM8K.")
@click.option("--split", default=None, help="A datasets folder's split (train, test…).")
@click.option("--fail-under", type=click.FloatRange(0, 1), default=None, metavar="ACC",
              help=f"Exit {FAIL_UNDER_EXIT} when any configuration's accuracy is below ACC (0–1): a CI gate.")
@MODEL_OPTION
@BACKEND_OPTION
@click.option("--base-url", "base_urls", multiple=True, metavar="URL",
              help="Repeatable: OpenAI-compatible servers (…/v1) that share the batch (default: $REASON_BASE_URL).")
@API_KEY_OPTION
@click.option("--server-concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="Requests in flight per server.")
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="Retries of a request on 429, 5xx, timeouts and lost connections, with backoff, on another server.")
@click.option("--request-timeout", type=click.FloatRange(min=1), default=300, show_default=True, help="Seconds.")
@DEVICE_OPTION
@DTYPE_OPTION
@sampling_options
@click.pass_context
def batch(ctx, input_path, out_path, resume_id, wiki, fail_under, device, dtype, api_key, **flags):
    """Answer every question of INPUT with every configuration (JSONL, CSV, Parquet, Arrow or a datasets folder)."""
    from .batch import summary
    from .errors import user_errors
    from .experiments_setup import prepare
    from .store import Store

    settings = ctx.obj.with_overrides(device=device, dtype=dtype, api_key=api_key,
                                      base_url=(flags["base_urls"] or (None,))[0])
    request = _request(input_path, out_path, resume_id, flags)
    try:
        store = Store.open(settings)
        prepared = prepare(request, settings, store)
    except user_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    _announce(prepared)
    _run(ctx, prepared, store, settings, wiki, f"reason batch {input_path} --out {out_path} --resume {prepared.batch_id}")
    rows = summary(store, prepared.batch_id)
    _print_summary(rows, prepared.models.pools)
    if fail_under is not None:
        _gate(ctx, rows, fail_under)


def _request(input_path, out_path, resume_id, flags: dict):
    from .batch_input import Fields
    from .experiments_setup import BatchRequest
    from .fanout import RetryPolicy

    fields = Fields(flags.pop("question_field"), flags.pop("answer_field"), flags.pop("id_field"),
                    flags.pop("answer_pattern"), flags.pop("split"))
    policy = RetryPolicy(per_server=flags.pop("server_concurrency"), attempts=flags.pop("retries") + 1,
                         timeout_s=flags.pop("request_timeout"))
    own = {k: flags.pop(k) for k in ("strategies", "templates", "config_path", "concurrency", "limit", "self_consistency",
                                     "sc_stop", "sc_weighted", "sc_round", "backend", "model_path", "base_urls")}
    return BatchRequest(input_path, out_path, resume_id=resume_id, fields=fields, policy=policy, sampling=flags, **own)


def _announce(prepared) -> None:
    job = prepared.job
    for problem in job.source.problems:
        click.echo(f"skipped {problem}", err=True)
    names = ", ".join(c.name for c in job.configs)
    click.echo(f"batch {prepared.batch_id}: {len(job.questions)} questions × {len(job.configs)} "
               f"configuration{'s' if len(job.configs) != 1 else ''} ({names})", err=True)


def _run(ctx, prepared, store, settings, wiki, resume_line: str) -> None:
    from .errors import user_errors
    from .fanout import ServersExhausted
    from .tools import wiki_problem, wiki_tool_factory

    needs_wiki = any(c.strategy == "react" for c in prepared.job.configs)
    if needs_wiki and (problem := wiki_problem(settings, wiki)):
        raise click.ClickException(problem)  # before any model loads: ReAct would only see connection errors
    wiki_tool = wiki_tool_factory(settings, wiki) if needs_wiki else None
    try:
        _run_with_progress(prepared, store, wiki_tool)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; finished runs are stored. Resume with: {resume_line}", err=True)
        ctx.exit(130)
    except ServersExhausted as exc:
        raise click.ClickException(f"{exc}\nfinished runs are stored; when a server is back: {resume_line}") from exc
    except user_errors() as exc:  # a model that cannot load, a server that lists no model
        raise click.ClickException(f"{exc}\nresume with: {resume_line}") from exc


def _run_with_progress(prepared, store, wiki_tool) -> None:
    from tqdm import tqdm

    from .batch import Progress, pending_work, run_batch

    job, batch_id = prepared.job, prepared.batch_id
    todo = len(pending_work(job, store, batch_id))
    progress = Progress(todo)
    with tqdm(total=todo, unit="run", dynamic_ncols=True) as bar:
        def on_record(record):
            progress.add(record)
            accuracy = "–" if progress.accuracy is None else f"{progress.accuracy:.0%}"
            bar.set_postfix_str(f"acc {accuracy}, {progress.tokens_per_s:.0f} tok/s")
            bar.update(1)
        run_batch(job, store, batch_id, wiki_tool=wiki_tool, on_record=on_record, models=prepared.models)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _interval(ci) -> str:
    return "" if not ci else f"[{ci[0]:.1%}–{ci[1]:.1%}]"


def _print_summary(rows: list[dict], pools) -> None:
    width = max([len(r["config"]) for r in rows] + [13])
    click.echo(f"{'configuration':<{width}} {'accuracy':>8} {'95% CI':>15} {'answered':>8} {'parse err':>9} "
               f"{'tool err':>8} {'tokens':>7} {'latency':>8} {'tok/correct':>11}  errors")
    for r in rows:
        errors = ", ".join(f"{k} ×{n}" for k, n in r["errors_by_kind"].items()) or "none"
        per_correct = "–" if r["tokens_per_correct"] is None else f"{r['tokens_per_correct']:.0f}"
        click.echo(f"{r['config']:<{width}} {_percent(r['accuracy']):>8} {_interval(r['ci95']):>15} "
                   f"{r['answered_rate']:>8.0%} {r['parse_error_rate']:>9.0%} {r['tool_error_rate']:>8.0%} "
                   f"{r['mean_tokens']:>7.0f} {r['mean_latency_ms'] / 1000:>7.1f}s {per_correct:>11}  {errors}")
    for pool in pools:
        for server in pool.stats():
            state = "in rotation" if server["alive"] else f"out of rotation ({server['last_error']})"
            click.echo(f"server {server['url']}: {server['requests']} requests, {server['failures']} failed, {state}")


def _gate(ctx, rows: list[dict], bar: float) -> None:
    below = [r for r in rows if r["accuracy"] is None or r["accuracy"] < bar]
    if not rows or below:
        names = ", ".join(f"{r['config']} ({_percent(r['accuracy'])})" for r in below) or "no configuration ran"
        click.echo(f"FAIL: below --fail-under {bar:.1%}: {names}", err=True)
        ctx.exit(FAIL_UNDER_EXIT)
    click.echo(f"PASS: every configuration at or above {bar:.1%}", err=True)


@click.command()
@click.argument("side_a", metavar="A")
@click.argument("side_b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: sides, wins, losses, ties, p_value, changed.")
@click.pass_context
def compare(ctx, side_a, side_b, as_json):
    """Compare two configurations on the questions both answered: A and B are BATCH or BATCH:CONFIG."""
    from .experiments_compare import compare as compare_sides
    from .experiments_compare import resolve_side
    from .store import Store

    store = Store.open(ctx.obj)
    try:
        result = compare_sides(store, resolve_side(store, side_a), resolve_side(store, side_b))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    for name, side in zip("AB", result["sides"]):
        click.echo(f"{name}  {side['label']:<30} accuracy {_percent(side['accuracy']):>6} {_interval(side['ci95'])}"
                   f"  n={side['n']}")
    click.echo(f"A wins {result['wins']}, loses {result['losses']}, ties {result['ties']}; "
               f"exact McNemar p = {result['p_value']:.4g}")
    if result["only_a"] or result["only_b"]:
        click.echo(f"not paired: {result['only_a']} question(s) only in A, {result['only_b']} only in B")
    for change in result["changed"]:
        mark = lambda side: "✓" if side["correct"] else "✗"  # noqa: E731
        click.echo(f"  {change['question_id']}: A {mark(change['a'])} {change['a']['run_id']}  "
                   f"B {mark(change['b'])} {change['b']['run_id']}  {change['question'][:60]}")


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def batches(ctx, limit, as_json):
    """List batches, newest first: id, input, configurations, counts, status and accuracy."""
    from .experiments_stats import batch_listing
    from .store import Store

    rows = batch_listing(Store.open(ctx.obj), limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    for row in rows:
        configs = ", ".join(f"{c['config']} {_percent(c['accuracy'])}" for c in row["configurations"])
        click.echo(f"{row['id']}  {row['status']:<11} {row['done']}/{row['total']}  acc {_percent(row['accuracy'])}  "
                   f"{row['input']}  [{configs}]")


@click.command("sc-replay")
@click.argument("side", metavar="BATCH[:CONFIG]")
@click.option("--round", "round_size", type=click.IntRange(min=1), default=2, show_default=True, help="Paths per round.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sc_replay(ctx, side, round_size, as_json):
    """Replay a self-consistency configuration's stored paths under adaptive stopping: tokens saved, accuracy kept."""
    from .experiments_compare import resolve_side
    from .experiments_replay import replay
    from .store import Store

    store = Store.open(ctx.obj)
    try:
        result = replay(store, resolve_side(store, side), round_size)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    full = result["full"]
    click.echo(f"{result['questions']} questions, budget {result['budget']} paths, rounds of {round_size}")
    click.echo(f"{'rule':<9} {'accuracy':>8} {'paths':>6} {'tokens':>8} {'saved':>6}  same answer as the whole budget")
    click.echo(f"{'full':<9} {full['accuracy']:>8.1%} {full['paths']:>6} {full['tokens']:>8}")
    for rule in (k for k in result if k not in ("questions", "budget", "full")):
        r = result[rule]
        click.echo(f"{rule:<9} {r['accuracy']:>8.1%} {r['paths']:>6} {r['tokens']:>8} {r['tokens_saved']:>6.1%}  "
                   f"{r['same_answers']}/{result['questions']}")
