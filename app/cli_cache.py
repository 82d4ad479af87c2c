"""`reason cache`: the packed weights kept between loads (engine/weight_cache.py), and their disk use."""
from __future__ import annotations

import json
from datetime import datetime

import click


def _cache(ctx: click.Context):
    from engine import WeightCache

    folder = ctx.obj.weight_cache
    if folder is None:
        raise click.ClickException("the weight cache is off (REASON_WEIGHT_CACHE=off)")
    return WeightCache(folder)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cache(ctx, as_json):
    """List the cached packed weights and their disk use (subcommand: clear).

    A model's first load packs its weights and keeps them in REASON_WEIGHT_CACHE (default: weights/
    under REASON_HOME; "off" turns it off); later loads of the same, unchanged file map them.
    """
    if ctx.invoked_subcommand:
        return
    store = _cache(ctx)
    entries = store.entries()
    if as_json:
        click.echo(json.dumps({"folder": str(store.folder), "bytes": sum(e["bytes"] for e in entries),
                               "budget_bytes": store.budget_bytes, "entries": entries}, indent=2))
        return
    for entry in entries:
        used = datetime.fromtimestamp(entry["last_used"]).isoformat(sep=" ", timespec="seconds")
        click.echo(f"{entry['bytes'] / 2**30:7.2f} GiB  last used {used}  {entry['source']}")
    total = sum(e["bytes"] for e in entries)
    click.echo(f"{len(entries)} cached model{'s' if len(entries) != 1 else ''}, {total / 2**30:.2f} GiB in {store.folder} "
               f"(at most {store.budget_bytes / 2**30:.0f} GiB: the least recently used go first)")


@cache.command("clear")
@click.pass_context
def cache_clear(ctx):
    """Remove every cached entry (the next load of each model packs again)."""
    store = _cache(ctx)
    freed = store.clear()
    click.echo(f"removed {freed / 2**30:.2f} GiB from {store.folder}")
