"""The `reason` command line: parses flags and calls into the engine; prints results."""
from __future__ import annotations

import json
import logging
import sys

import click

from .bench.cli import bench
from .cli_cache import cache
from .cli_experiments import batch, batches, compare, sc_replay
from .cli_options import (
    API_KEY_OPTION,
    BACKEND_OPTION,
    BASE_URL_OPTION,
    DEVICE_OPTION,
    DTYPE_OPTION,
    MODEL_OPTION,
    sampling_options,
)
from .cli_perplexity import perplexity
from .cli_records import runs, templates, wiki
from .runner import STRATEGIES
from .settings import Settings


def _load(ctx: click.Context, model_path, device, dtype):
    from engine import ModelFileError, load_model

    settings: Settings = ctx.obj.with_overrides(model_path=model_path, device=device, dtype=dtype)
    try:
        return load_model(settings.model_path, **settings.engine_options())
    except (ModelFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool):
    """Reasoning Studio: question answering with local LLaMA-family models."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Settings.from_env()
    from .telemetry import install

    install(ctx.obj)  # runs become OpenTelemetry spans when OTEL_EXPORTER_OTLP_* names a collector


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


@cli.command()
@click.argument("question")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="cot", show_default=True)
@click.option("--template", "template_name", default=None,
              help="NAME or NAME@VERSION (default: the strategy's own template, its promoted version, else 1).")
@click.option("--self-consistency", "self_consistency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Sample K answers at temperature 0.7 and vote (cot, pal).")
@click.option("--wiki", type=click.Choice(["auto", "offline", "live"]), default="auto", show_default=True,
              help="ReAct's Wikipedia: the offline corpus (reason wiki import), the live API, or offline when imported.")
@MODEL_OPTION
@BACKEND_OPTION
@BASE_URL_OPTION
@API_KEY_OPTION
@DEVICE_OPTION
@DTYPE_OPTION
@sampling_options
@click.option("--json", "as_json", is_flag=True, help="Print the whole trace as JSON.")
@click.pass_context
def ask(ctx, question, strategy, template_name, self_consistency, wiki, model_path, backend, base_url, api_key, device,
        dtype, as_json, **sampling):
    """Answer QUESTION with a strategy and print the answer (or the whole trace with --json)."""
    from .errors import user_errors
    from .runner import DEFAULT_TEMPLATES, StrategyOptions, record_run
    from .store import Store
    from .templates import load_template

    if not question.strip():
        raise click.BadParameter("the question is empty", param_hint="QUESTION")
    settings: Settings = ctx.obj.with_overrides(model_path=model_path, device=device, dtype=dtype, base_url=base_url,
                                                api_key=api_key)
    try:
        store = Store.open(settings)
        template = load_template(store, template_name or DEFAULT_TEMPLATES[strategy])
        model, info, wiki_tool = _model_and_tools(settings, backend, sampling, strategy == "react", wiki)
        run_id, trace, _ = record_run(store, question, strategy, model, info, template,
                                      StrategyOptions(self_consistency=self_consistency), wiki_tool)
    except user_errors() as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({**trace.to_dict(), "run_id": run_id}, indent=2, ensure_ascii=False))
    else:
        click.echo(trace.answer if trace.answer is not None else f"(no answer: {trace.error or trace.status})")
        click.echo(f"run {run_id}", err=True)
    if trace.status == "error":
        ctx.exit(1)


def _model_and_tools(settings, backend, sampling, needs_wiki, wiki_mode):
    from .backends import BackendChoice, chat_model
    from .tools import wiki_problem, wiki_tool_factory

    if needs_wiki and (problem := wiki_problem(settings, wiki_mode)):
        raise click.ClickException(problem)  # before the model loads: ReAct would only see connection errors
    choice = BackendChoice(backend, settings.model_path, settings.device, settings.dtype,
                           {k: v for k, v in sampling.items() if v is not None}, base_url=settings.base_url,
                           api_key=settings.api_key, engine_options=settings.engine_options())
    model, info = chat_model(choice)
    return model, info, wiki_tool_factory(settings, wiki_mode) if needs_wiki else None


@cli.command("model-info")
@MODEL_OPTION
@click.option("--check", is_flag=True, help="Also read every weight for NaN or infinity (as llama.cpp's --check-tensors).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def model_info(ctx, model_path, check, as_json):
    """Describe a GGUF model: architecture, size, tensor types, context, vocabulary, chat template.

    Exits 1 with the reason when the file is unsound (metadata, tensor directory, chat template, and
    with --check the weights' values)."""
    from engine import ModelFileError
    from engine import model_info as describe

    settings: Settings = ctx.obj.with_overrides(model_path=model_path)
    try:
        info = describe(settings.model_path, check_tensors=check)
    except ModelFileError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in _model_rows(info):
        click.echo(f"{key:>15}: {value}")


def _model_rows(info: dict) -> list[tuple[str, object]]:
    types = ", ".join(f"{name} ×{count}" for name, count in info["tensor_types"].items())
    rows = [("file", info["path"]), ("name", info["name"]), ("architecture", info["architecture"]),
            ("parameters", f"{info['parameters']:,}"), ("tensor types", types),
            ("context length", info["context_length"]), ("vocabulary", f"{info['vocab_kind']} ({info['vocab_size']:,} tokens)"),
            ("chat template", "from the file" if info["chat_template"] else "none (LLaMA-2 [INST] fallback)")]
    check = info.get("tensor_check")
    if check is not None:
        skipped = f"; {len(check['unchecked'])} of types not checked" if check["unchecked"] else ""
        rows.append(("tensors", f"{check['checked']} checked, no NaN or infinity{skipped}"))
    return rows


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 serves other machines (then use --auth).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--auth", default=None, metavar="USER:PASSWORD", envvar="REASON_UI_AUTH",
              help="Require this login (default: $REASON_UI_AUTH).")
@MODEL_OPTION
@DEVICE_OPTION
@DTYPE_OPTION
@click.option("--base-url", default=None, metavar="URL",
              help="The OpenAI-compatible server whose health the Model page shows (default: $REASON_BASE_URL, "
                   "else http://127.0.0.1:8000/v1).")
@API_KEY_OPTION
@click.option("--metrics/--no-metrics", default=True, show_default=True,
              help="Serve the engine's Prometheus metrics at GET /metrics.")
@click.pass_context
def ui(ctx, host, port, auth, model_path, device, dtype, base_url, api_key, metrics):
    """Serve the web app: chat with a strategy, prompt templates, batches, run history, the model."""
    from engine import ModelFileError

    from .ui import exposure_warning, launch

    settings: Settings = ctx.obj.with_overrides(model_path=model_path, device=device, dtype=dtype, base_url=base_url,
                                                api_key=api_key)
    if auth and ":" not in auth:
        raise click.BadParameter("expected USER:PASSWORD", param_hint="--auth")
    credentials = tuple(auth.split(":", 1)) if auth else None
    warning = exposure_warning(host, credentials)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"Reasoning Studio: loading the model, then serving http://{host}:{port}/ (Ctrl+C stops)", err=True)
    try:
        launch(settings, host=host, port=port, model_path=settings.model_path, auth=credentials, warn=False,
               metrics=metrics)
    except (ModelFileError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 serves other machines (then use --api-key).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, metavar="KEY", help="Require 'Authorization: Bearer KEY' (default: $REASON_API_KEY).")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=8.0, show_default=True,
              help="Refuse larger request bodies (413) before reading them.")
@click.option("--metrics/--no-metrics", default=True, show_default=True, help="Serve Prometheus metrics at GET /metrics.")
@MODEL_OPTION
@DEVICE_OPTION
@DTYPE_OPTION
@click.pass_context
def serve(ctx, host, port, api_key, max_body_mb, metrics, model_path, device, dtype):
    """Serve the model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions)."""
    from engine.serving.server import exposure_warning
    from engine.serving.server import serve as serve_engine

    api_key = ctx.obj.with_overrides(api_key=api_key).api_key
    if api_key is not None and not api_key.strip():
        raise click.BadParameter("the key is blank, which would let an empty bearer token in; "
                                 "give a key, or leave --api-key out to serve without one", param_hint="--api-key")
    warning = exposure_warning(host, api_key)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    engine = _load(ctx, model_path, device, dtype)
    click.echo(f"serving {engine.info['name']} at http://{host}:{port}/v1 (Ctrl+C stops)", err=True)
    try:
        serve_engine(engine, host, port, api_key, warn=False, max_body_mb=max_body_mb, metrics=metrics)
    finally:
        engine.close()


for command in (runs, templates, wiki, bench, perplexity, batch, compare, batches, sc_replay, cache):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="reason")


if __name__ == "__main__":
    sys.exit(main())
