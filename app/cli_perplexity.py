"""`reason perplexity`: a quality check of the engine against llama.cpp on the same file and text."""
from __future__ import annotations

import json

import click
from tqdm import tqdm

from .cli_options import DEVICE_OPTION, DTYPE_OPTION, MODEL_OPTION
from .settings import Settings


@click.command()
@click.argument("text_file", required=False, type=click.Path(exists=True, dir_okay=False))
@MODEL_OPTION
@DEVICE_OPTION
@DTYPE_OPTION
@click.option("--weights", type=click.Choice(["packed", "dense"]), default=None,
              help="packed: 4/8-bit (the CPU bf16 default); dense: dequantized.")
@click.option("--ctx", "window", type=click.IntRange(min=4), default=512, show_default=True, help="Tokens per window.")
@click.option("--reference", is_flag=True, help="Also run llama.cpp on the same file and text, and compare.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def perplexity(ctx, text_file, model_path, device, dtype, weights, window, reference, as_json):
    """Perplexity of TEXT_FILE (default: a text shipped with the app) the llama-perplexity way:
    non-overlapping windows of --ctx tokens, the second half of each scored."""
    from engine import ModelFileError, load_model

    from .perplexity import default_text, reference_perplexity, report

    settings: Settings = ctx.obj.with_overrides(model_path=model_path, device=device, dtype=dtype, weights=weights)
    text = open(text_file, encoding="utf-8").read() if text_file else default_text()
    try:
        engine = load_model(settings.model_path, **settings.engine_options())
        ours = _measure(lambda progress: engine.perplexity(text, window, progress), "ours")
        theirs = _measure(lambda progress: reference_perplexity(engine.path, text, window, progress),
                          "llama.cpp") if reference else None
    except (ModelFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    label = f"{engine.info['dtype']} {engine.info['weights']}"
    result = report(ours, theirs, label)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"ours ({label}): perplexity {ours.value:.4f} over {ours.tokens_scored} tokens in {ours.windows} "
               f"windows of {ours.ctx}")
    if theirs is not None:
        click.echo(f"llama.cpp: perplexity {theirs.value:.4f}; ours / llama.cpp = {result['ratio']:.4f}")


def _measure(run, label: str):
    with tqdm(desc=label, unit="window", leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
        return run(progress)
