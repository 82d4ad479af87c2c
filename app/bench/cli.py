"""`reason bench`: ours against a reference, side by side in one process."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..cli_options import MODEL_OPTION
from .gguf_shapes import SHAPES
from .questions import SHIPPED_QUESTIONS

SPECULATIVE_STRATEGIES = ("cot", "pal", "react")  # those with a shipped *_free template


@click.group()
def bench():
    """Benchmarks: ours against a reference, side by side in one process."""


@bench.command("sampling")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (cuda runs the Triton kernels).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bench_sampling_command(device, as_json):
    """Time per sampling step, ours vs sort-based top-p, for vocab 32000/49152/128256 and batch 1/8/64/256."""
    from .sampling import bench_sampling

    if device == "cuda" and not __import__("torch").cuda.is_available():
        raise click.ClickException("--device cuda: no CUDA GPU is available")
    if device == "cuda":
        path = "Triton kernels"
    else:
        from engine.kernels import cpu_matmul

        path = ("the native sampler, kernels/cpu_sampling.c" if cpu_matmul.available()
                else "the PyTorch sampler (no native kernels on this CPU)")
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
    from .batch import bench_batch

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


@bench.command("engine")
@MODEL_OPTION
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Prompts in the batch (default 64).")
@click.option("--new-tokens", type=click.IntRange(min=2), default=None,
              help="Tokens per request (default 128; 16 with --shape).")
@click.option("--prompt-tokens", type=click.IntRange(min=2), default=None,
              help="Prefill prompt length (default 512; 128 with --shape).")
@click.option("--quick", is_flag=True, help="Small sizes (for tests); flags above still override.")
@click.option("--questions", "questions_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=SHIPPED_QUESTIONS, show_default="the 32 shipped with the app",
              help="JSONL with a 'question' field per line; generated arithmetic tops it up to the batch size.")
@click.option("--shape", type=click.Choice(sorted(SHAPES)), default=None,
              help="Instead: load and generate on random-weight GGUFs of this model shape (Q4_0 and Q4_K_M, "
                   "written once into --work-dir) and on the default model, warm and cold, ours vs llama.cpp.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where --shape keeps its GGUF files (default: reason-bench in the system temp dir).")
@click.option("--no-cold", is_flag=True, help="With --shape: skip the runs with the file out of the page cache.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for both sides (default: all).")
@click.option("--busy-core", is_flag=True, help="Run a busy-loop neighbour on one core throughout.")
@click.option("--no-variants", is_flag=True, help="Skip our options (speculative, batch-invariant, constrained, sampled).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (progress still goes to stderr).")
@click.pass_context
def bench_engine_command(ctx, model_path, device, batch_size, new_tokens, prompt_tokens, quick, questions_path,
                         shape, work_dir, no_cold, threads, busy_core, no_variants, as_json):
    """Ours vs llama-cpp-python on one GGUF: prefill, decode, TTFT, shared-prefix batch throughput, peak memory."""
    from .engine import QUICK, Sizes, bench_engine, format_table

    if device == "cuda" and not __import__("torch").cuda.is_available():
        raise click.ClickException("--device cuda: no CUDA GPU is available")
    if shape is not None:
        return _bench_shape(shape, work_dir, prompt_tokens or 128, new_tokens or 16, not no_cold, as_json,
                            ctx.obj.weight_cache, ctx.obj.kernels)
    sizes = (QUICK if quick else Sizes()).with_overrides(batch_size=batch_size, new_tokens=new_tokens,
                                                         prompt_tokens=prompt_tokens, threads=threads,
                                                         variants=False if no_variants else None)
    try:
        report = bench_engine(model_path or ctx.obj.model_path, device, sizes, verbose=True,
                              questions_path=questions_path, busy_core=busy_core, weight_cache=ctx.obj.weight_cache,
                              kernels=ctx.obj.kernels)
    except ValueError as exc:  # a bad model or questions file, or a prompt longer than its context
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, indent=2) if as_json else format_table(report))


def _bench_shape(shape: str, work_dir: Path | None, prompt_tokens: int, new_tokens: int, cold: bool, as_json: bool,
                 weight_cache: Path | None, kernels: str):
    from .load import bench_load, default_work_dir, format_load_table

    say = lambda message: click.echo(f"[bench] {message}", err=True)  # noqa: E731
    try:
        report = bench_load(shape, work_dir or default_work_dir(), prompt_tokens, new_tokens, cold, say, weight_cache,
                            kernels)
    except (ValueError, OSError, RuntimeError) as exc:  # no room for the files, a bad work dir, a side that failed
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, indent=2) if as_json else format_load_table(report))


@bench.command("speculative")
@MODEL_OPTION
@click.option("--questions", "questions_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=SHIPPED_QUESTIONS, show_default="the 32 shipped with the app",
              help="JSONL with a 'question' field per line.")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="Questions per strategy.")
@click.option("--draft-tokens", type=click.IntRange(1, 16), default=4, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--strategy", "strategies", type=click.Choice(list(SPECULATIVE_STRATEGIES)), multiple=True,
              help="Repeatable (default: all three). ReAct uses the Wikipedia corpus `reason wiki import` made, else live.")
@click.option("--deterministic", is_flag=True, help="Both sides in batch-invariant mode (drafts then change nothing).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def bench_speculative_command(ctx, model_path, questions_path, limit, draft_tokens, max_tokens, strategies, deterministic,
                              as_json):
    """Speculative decoding per strategy (CoT, PAL, ReAct), one question at a time: acceptance and speed-up."""
    from ..tools import wiki_problem, wiki_tool_factory
    from .questions import load_questions
    from .speculative import bench_speculative

    strategies = strategies or tuple(SPECULATIVE_STRATEGIES)
    if "react" in strategies and (problem := wiki_problem(ctx.obj)):
        raise click.ClickException(problem)
    try:
        questions, source = load_questions(limit, questions_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    show = None if as_json else (lambda r: click.echo(
        f"{r['strategy']:<6} {r['questions']} questions: {r['plain_tok_s']:.1f} -> {r['draft_tok_s']:.1f} tok/s "
        f"({r['speedup']:.2f}x), acceptance {r['acceptance'] or 0:.0%} of {r['drafted']} drafted, "
        f"same answer {r['same_answer']}/{r['questions']}"))
    if not as_json:
        click.echo(f"prompt-lookup drafts of {draft_tokens} tokens, greedy, questions: {source}")
    results = bench_speculative(questions, draft_tokens, max_tokens, model_path or ctx.obj.model_path, strategies,
                                wiki_tool_factory(ctx.obj) if "react" in strategies else None, deterministic, progress=show)
    if as_json:
        click.echo(json.dumps({"questions": source, "results": results}, indent=2))


@bench.command("grammar")
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def bench_grammar_command(ctx, model_path, as_json):
    """llguidance (ours) vs xgrammar on our tokenizers: compile time, mask time per token, correctness."""
    from .grammar import bench_grammar

    if not as_json:
        click.echo(f"{'library':<11} {'vocab':>6} {'constraint':<12} {'compile ms':>10} {'mask us p50':>11} "
                   f"{'mask us max':>11} {'steps':>5} correct")
    show = None if as_json else (lambda r: click.echo(
        f"{r['library']:<11} {r['vocab']:>6} {r['case']:<12} " + (f"{r['error']}" if "error" in r else
        f"{r['compile_ms']:>10.1f} {r['mask_us_median']:>11.1f} {r['mask_us_max']:>11.0f} {r['steps']:>5} {r['correct']}")))
    results = bench_grammar(model_path or ctx.obj.model_path, progress=show)
    if as_json:
        click.echo(json.dumps(results, indent=2))


@bench.command("serve")
@click.option("--clients", type=click.IntRange(min=1), default=16, show_default=True,
              help="Concurrent streaming clients.")
@click.option("--seconds", type=click.FloatRange(min=1), default=30, show_default=True,
              help="How long each server is loaded.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def bench_serve_command(ctx, clients, seconds, max_tokens, device, model_path, as_json):
    """Our OpenAI-compatible server vs llama-cpp-python's on one GGUF, same load: req/s, tok/s, TTFT, ITL."""
    from .serve import Load, bench_serve, format_report

    show = None if as_json else (lambda r: click.echo(f"{r['server']}: {r['completed']} requests, "
                                                      f"{r['output_tokens_per_s']:.1f} tok/s", err=True))
    try:
        report = bench_serve(model_path or ctx.obj.model_path, Load(clients, seconds, max_tokens), device, show)
    except (ValueError, RuntimeError) as exc:  # a bad model path, or a server that did not start
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
