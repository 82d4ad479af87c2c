"""`reason runs`, `reason templates` and `reason wiki`: the stored records and the offline corpus."""
from __future__ import annotations

import json

import click

from .cli_fork import runs_diff, runs_fork, runs_replay
from .lineage import lineage_line
from .runner import STRATEGIES
from .store import RUN_STATUSES


@click.group(invoke_without_command=True)
@click.option("--search", "text", default=None, help="Full-text search over questions and answers.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None)
@click.option("--status", type=click.Choice(RUN_STATUSES), default=None)
@click.option("--batch", "batch_id", default=None)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.pass_context
def runs(ctx, text, strategy, status, batch_id, limit):
    """List stored runs, newest first (subcommands: show, export, delete, fork, diff, replay)."""
    if ctx.invoked_subcommand:
        return
    from .store import Store

    rows = Store.open(ctx.obj).search_runs(text=text, strategy=strategy, status=status, batch_id=batch_id, limit=limit)
    if not rows:
        click.echo("no runs")
    for r in rows:
        answer = "–" if r["answer"] is None else str(r["answer"])[:20]
        mark = {True: "✓", False: "✗"}.get(r["correct"], " ")
        click.echo(f"{r['id']}  {r['created_at'][:19]}  {r['strategy']:<6} {r['status']:<9} {mark} {answer:<20}  "
                   f"{r['question'][:60]}")


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs_show(ctx, run_id, as_json):
    """The whole trace of one run, readable."""
    from .store import Store

    run = Store.open(ctx.obj).get_run(run_id)
    if run is None:
        raise click.ClickException(f"no run with id {run_id}")
    if as_json:
        click.echo(json.dumps(run, indent=2, ensure_ascii=False, default=str))
        return
    click.echo(f"run {run['id']} · {run['strategy']} · template {run['template_name']} v{run['template_version']} · "
               f"{run['model_id']} ({run['backend']}) · {run['status']} · {run['duration_ms'] / 1000:.1f}s")
    if run.get("parent_run_id") or run.get("lineage"):
        click.echo(lineage_line(run))
    click.echo(f"Q: {run['question']}")
    for step in run["steps"]:
        click.echo(step_head(step, run.get("forked_at")))
        click.echo(step["output"] if step["kind"] != "tool" else f"{step['input']}\n=> {step['output']}")
        if step["error"]:
            click.echo(f"error: {step['error']}")
    click.echo(f"A: {run['answer']}" + ("" if run["expected"] is None else f"   (expected {run['expected']}, "
                                                                           f"{'correct' if run['correct'] else 'wrong'})"))
    if run["error"]:
        click.echo(f"error: {run['error']}")


def step_head(step: dict, forked_at: int | None) -> str:
    """'--- 2. llm step 2 (130 ms, 412+31 tokens, 384 from cache)', marked when it is a fork's record or edit."""
    meta = step.get("meta") or {}
    head = f"--- {step['idx']}. {step['kind']} {step['name']} ({step['duration_ms']:.0f} ms"
    if step["kind"] == "llm":
        head += f", {step['prompt_tokens']}+{step['completion_tokens']} tokens"
        head += f", {meta['cached_prompt_tokens']} from cache" if meta.get("cached_prompt_tokens") else ""
    head += ")"
    if forked_at is not None and step["idx"] < forked_at:
        head += " [from the parent run]"
    if meta.get("branched_at_token") is not None:
        return head + f" [branched at token {meta['branched_at_token']}]"
    return head + (" [edited]" if meta.get("edited") else "")


@runs.command("export")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True)
@click.option("--batch", "batch_id", default=None)
@click.pass_context
def runs_export(ctx, out_path, batch_id):
    """Write runs with their steps to a JSONL file."""
    from .store import Store

    count = Store.open(ctx.obj).export_jsonl(out_path, batch_id=batch_id)
    click.echo(f"exported {count} runs to {out_path}")


@runs.command("delete")
@click.argument("run_id")
@click.pass_context
def runs_delete(ctx, run_id):
    """Delete one run and its steps."""
    from .store import Store

    if not Store.open(ctx.obj).delete_run(run_id):
        raise click.ClickException(f"no run with id {run_id}")
    click.echo(f"deleted {run_id}")


for command in (runs_fork, runs_diff, runs_replay):
    runs.add_command(command)


@click.group()
def templates():
    """Prompt templates: shipped ones are version 1; saved edits become 2, 3, …; `promote` picks the default."""


@templates.command("list")
@click.pass_context
def templates_list(ctx):
    """Every template with its versions; * marks the default (the version that runs when none is named)."""
    from prompts.template import shipped_template_names

    from .store import Store
    from .templates import default_version, sync_shipped

    store = Store.open(ctx.obj)
    sync_shipped(store)
    for name in shipped_template_names():
        default = default_version(store, name)
        click.echo(f"{name:<16} " + ", ".join(f"v{v['version']}" + ("*" if v["version"] == default else "") +
                                             (f" ({v['note']})" if v["note"] else "")
                                             for v in store.template_versions(name)))


@templates.command("show")
@click.argument("spec")
@click.pass_context
def templates_show(ctx, spec):
    """Print the YAML of NAME or NAME@VERSION."""
    from prompts.template import TemplateError

    from .store import Store
    from .templates import load_template, parse_spec

    store = Store.open(ctx.obj)
    try:
        template = load_template(store, spec)
    except TemplateError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(store.get_template(parse_spec(spec)[0], template.version))


@templates.command("save")
@click.argument("name")
@click.argument("yaml_file", type=click.File("r", encoding="utf-8"))
@click.option("--note", default="", help="What changed.")
@click.pass_context
def templates_save(ctx, name, yaml_file, note):
    """Save YAML_FILE as the next version of template NAME (refused when invalid)."""
    from prompts.template import TemplateError

    from .store import Store
    from .templates import save_template

    try:
        version = save_template(Store.open(ctx.obj), name, yaml_file.read(), note)
    except TemplateError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"saved {name}@{version} (runs use it when named; `reason templates promote {name}@{version}` "
               f"makes it the default)")


@templates.command("promote")
@click.argument("spec")
@click.pass_context
def templates_promote(ctx, spec):
    """Make NAME@VERSION the version that runs when no version is named."""
    from prompts.template import TemplateError

    from .store import Store
    from .templates import promote_template

    try:
        name, version = promote_template(Store.open(ctx.obj), spec)
    except TemplateError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}@{version} is now the default for {name}")


@click.group()
def wiki():
    """The offline Wikipedia corpus that ReAct searches on machines without network."""


@wiki.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def wiki_import(ctx, source):
    """Import SOURCE (JSONL with title/text per line, or a MediaWiki XML dump, optionally .gz/.bz2)."""
    from prompts.wiki import import_corpus

    from .tools import wiki_paths

    corpus, _ = wiki_paths(ctx.obj)
    corpus.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    try:
        count = import_corpus(source, corpus, errors)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for error in errors[:20]:
        click.echo(f"skipped: {error}", err=True)
    if len(errors) > 20:
        click.echo(f"… and {len(errors) - 20} more skipped", err=True)
    click.echo(f"imported {count} pages into {corpus}")
