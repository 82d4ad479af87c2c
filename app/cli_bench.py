"""`reason bench`: ours against a reference, side by side in one process."""
from __future__ import annotations

import json

import click

from .cli_options import MODEL_OPTION

@click.group()
def bench():
    """Benchmarks: ours against a reference, side by side in one process."""


@bench.command("sampling")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (cuda runs the Triton kernels).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bench_sampling_command(device, as_json):
    """Time per sampling step, ours vs sort-based top-p, for vocab 32000/49152/128256 and batch 1/8/64/256."""
    from .bench import bench_sampling

    if device == "cuda" and not __import__("torch").cuda.is_available():
        raise click.ClickException("--device cuda: no CUDA GPU is available")
    path = "Triton kernels" if device == "cuda" else "the PyTorch sampler (Triton runs only on GPU)"
    if not as_json:
        click.echo(f"sampling on {device}: ours = {path}; reference = torch.sort + cumsum top-p")
        click.echo(f"{'vocab':>7} {'batch':>5} {'ours ms':>9} {'sort ms':>9} {'speed-up':>8}")
    show = None if as_json else (lambda r: click.echo(
        f"{r['vocab']:>7} {r['batch']:>5} {r['ours_ms']:>9.3f} {r['sort_top_p_ms']:>9.3f} {r['speedup']:>7.2f}x"))
    results = bench_sampling(device, progress=show)
    if as_json:
        click.echo(json.dumps({"device": device, "ours": path, "results": results}, indent=2))


@bench.command("batch")
@click.option("--questions", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench_batch_command(ctx, questions, concurrency, max_tokens, model_path, as_json):
    """CoT on N arithmetic questions: our engine in-process vs llama.cpp, through the same strategy code."""
    from .bench import bench_batch

    model_path = model_path or ctx.obj.model_path
    show = None if as_json else (lambda r: click.echo(
        f"{r['backend']:<9} {r['questions']} questions in {r['wall_s']:.1f}s = {r['questions_per_min']:.1f}/min "
        f"({r['correct']} correct, {r['errors']} errors)"))
    results = bench_batch(("engine", "llamacpp"), questions, concurrency, max_tokens, model_path, progress=show)
    ratio = results[0]["questions_per_min"] / results[1]["questions_per_min"]
    if as_json:
        click.echo(json.dumps({"results": results, "ours_over_llamacpp": ratio}, indent=2))
    else:
        click.echo(f"ours / llama.cpp throughput: {ratio:.2f}x")
