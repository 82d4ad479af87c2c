"""The `reason` command line: parses flags and calls into the engine; prints results."""
from __future__ import annotations

import json
import logging
import sys

import click

from .settings import Settings

MODEL_OPTION = click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
                            help="GGUF file (default: $REASON_MODEL or the bundled SmolLM2-135M-Instruct).")
DEVICE_OPTION = click.option("--device", default=None, help="auto, cpu or cuda (default: $REASON_DEVICE or auto).")
DTYPE_OPTION = click.option("--dtype", default=None, help="float32, bfloat16 or float16 (default: fp32 on CPU, bf16 on GPU).")


def _load(ctx: click.Context, model_path, device, dtype):
    from engine import ModelFileError, load_model

    settings: Settings = ctx.obj.with_overrides(model_path=model_path, device=device, dtype=dtype)
    try:
        return load_model(settings.model_path, device=settings.device, dtype=settings.dtype)
    except (ModelFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool):
    """Reasoning Studio: question answering with local LLaMA-family models."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Settings.from_env()


@cli.command()
@click.argument("prompt")
@MODEL_OPTION
@DEVICE_OPTION
@DTYPE_OPTION
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--stop", multiple=True, help="Stop string (repeatable); not included in the output.")
@click.option("--chat", is_flag=True, help="Wrap the prompt as a user message in the model's chat template.")
@click.pass_context
def generate(ctx, prompt, model_path, device, dtype, max_tokens, stop, chat):
    """Print the model's greedy continuation of PROMPT."""
    if not prompt.strip():
        raise click.BadParameter("the prompt is empty", param_hint="PROMPT")
    model = _load(ctx, model_path, device, dtype)
    if chat:
        prompt = model.apply_chat_template([{"role": "user", "content": prompt}])
    from engine import ContextLengthError

    try:
        completion = model.generate([prompt], max_tokens=max_tokens, stop=list(stop))[0]
    except ContextLengthError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(completion.text)


def sampling_options(fn):
    """The sampling flags shared by the commands that run a model."""
    flags = [
        click.option("--temperature", type=click.FloatRange(min=0), default=None, help="0 = greedy (default)."),
        click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None),
        click.option("--top-k", type=click.IntRange(min=0), default=None),
        click.option("--min-p", type=click.FloatRange(0, 1), default=None),
        click.option("--repetition-penalty", type=click.FloatRange(min=0, min_open=True), default=None),
        click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="Per model call (default 512)."),
        click.option("--seed", type=click.IntRange(min=0), default=None),
    ]
    for flag in reversed(flags):
        fn = flag(fn)
    return fn


SAMPLING_FLAGS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens", "seed")


@cli.command()
@click.argument("question")
@click.option("--strategy", type=click.Choice(["direct", "cot", "pal", "react"]), default="cot", show_default=True)
@click.option("--template", "template_name", default=None, help="A shipped template name (default: the strategy's own).")
@click.option("--self-consistency", "self_consistency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Sample K answers at temperature 0.7 and vote (cot, pal).")
@click.option("--wiki", type=click.Choice(["auto", "offline", "live"]), default="auto", show_default=True,
              help="ReAct's Wikipedia: the offline corpus (reason wiki import), the live API, or offline when imported.")
@MODEL_OPTION
@DEVICE_OPTION
@DTYPE_OPTION
@sampling_options
@click.option("--json", "as_json", is_flag=True, help="Print the whole trace as JSON.")
@click.pass_context
def ask(ctx, question, strategy, template_name, self_consistency, wiki, model_path, device, dtype, as_json, **sampling):
    """Answer QUESTION with a strategy and print the answer (or the whole trace with --json)."""
    from prompts.template import TemplateError, load_shipped

    from .backends import BackendChoice, chat_model
    from .runner import StrategyOptions, run_question
    from .tools import wiki_tool_factory

    if not question.strip():
        raise click.BadParameter("the question is empty", param_hint="QUESTION")
    settings: Settings = ctx.obj.with_overrides(model_path=model_path, device=device, dtype=dtype)
    try:
        template = load_shipped(template_name) if template_name else None
        choice = BackendChoice("engine", settings.model_path, settings.device, settings.dtype,
                               {k: v for k, v in sampling.items() if v is not None})
        model, info = chat_model(choice)
        trace = run_question(strategy, question, model, info, template, StrategyOptions(self_consistency=self_consistency),
                             wiki_tool=wiki_tool_factory(settings, wiki) if strategy == "react" else None)
    except (TemplateError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(trace.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(trace.answer if trace.answer is not None else f"(no answer: {trace.error or trace.status})")
    if trace.status == "error":
        ctx.exit(1)


@cli.group()
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


@cli.command("model-info")
@MODEL_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def model_info(ctx, model_path, as_json):
    """Describe a GGUF model: architecture, size, tensor types, context, vocabulary, chat template."""
    from engine import ModelFileError
    from engine import model_info as describe

    settings: Settings = ctx.obj.with_overrides(model_path=model_path)
    try:
        info = describe(settings.model_path)
    except ModelFileError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    types = ", ".join(f"{name} ×{count}" for name, count in info["tensor_types"].items())
    rows = [("file", info["path"]), ("name", info["name"]), ("architecture", info["architecture"]),
            ("parameters", f"{info['parameters']:,}"), ("tensor types", types),
            ("context length", info["context_length"]), ("vocabulary", f"{info['vocab_kind']} ({info['vocab_size']:,} tokens)"),
            ("chat template", "from the file" if info["chat_template"] else "none (LLaMA-2 [INST] fallback)")]
    for key, value in rows:
        click.echo(f"{key:>15}: {value}")


@cli.group()
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


def main() -> None:
    cli(prog_name="reason")


if __name__ == "__main__":
    sys.exit(main())
