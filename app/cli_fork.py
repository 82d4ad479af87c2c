"""`reason runs fork | diff | replay`: continue a stored run from any step, compare two runs, re-run one exactly."""
from __future__ import annotations

import json
from contextlib import contextmanager

import click

from .cli_options import (
    API_KEY_OPTION,
    BACKEND_OPTION,
    BASE_URL_OPTION,
    DEVICE_OPTION,
    DTYPE_OPTION,
    MODEL_OPTION,
    sampling_options,
)
from .runner import STRATEGIES
from .settings import Settings

WIKI_OPTION = click.option("--wiki", type=click.Choice(["auto", "offline", "live"]), default="auto", show_default=True,
                           help="ReAct's Wikipedia for the calls after the recorded ones (recorded ones never run).")


def model_options(fn):
    """The flags that choose the model a fork or replay continues with (default: the run's sampling)."""
    for option in reversed((MODEL_OPTION, BACKEND_OPTION, BASE_URL_OPTION, API_KEY_OPTION, DEVICE_OPTION, DTYPE_OPTION,
                            WIKI_OPTION)):
        fn = option(fn)
    return sampling_options(fn)


@click.command("fork")
@click.argument("run_id")
@click.option("--at", "at", type=click.IntRange(min=0), required=True,
              help="The step to fork at, numbered as `reason runs show` shows it; earlier steps come from the record.")
@click.option("--replace", "text", default=None, help="The step's new output (a thought, an action, a program, an "
                                                      "observation); without it the step is generated afresh.")
@click.option("--replace-file", "text_file", type=click.File("r", encoding="utf-8"), default=None,
              help="The same, read from a file.")
@click.option("--continue", "continued", is_flag=True,
              help="The model goes on after the replacement text (a branch), instead of it being the whole output.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None, help="Another strategy (only with --at 0).")
@click.option("--template", "template_spec", default=None, help="NAME@VERSION (default: the version the run used).")
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print run_id, parent_run_id, forked_at, answer and lineage.")
@click.pass_context
def runs_fork(ctx, run_id, at, text, text_file, continued, strategy, template_spec, as_json, **choice):
    """Continue run RUN_ID from step --at: the steps before it come from the record (no model or tool call),
    the step gets the --replace text or is generated afresh, with another template, sampling or model if given."""
    from .fork import Edit, fork
    from .templates import load_template

    if text is not None and text_file is not None:
        raise click.BadParameter("give --replace or --replace-file, not both", param_hint="--replace")
    text = text_file.read() if text_file is not None else text
    if continued and text is None:
        raise click.BadParameter("--continue needs the text to continue from (--replace)", param_hint="--continue")
    with _user_errors():
        store, model, info, wiki = _setup(ctx.obj, run_id, choice)
        template = load_template(store, template_spec) if template_spec else None
        recorded = fork(store, run_id, at, model, info, edit=None if text is None else Edit(text, continued),
                        strategy=strategy, template=template, wiki_tool=wiki)
    _report(store.get_run(recorded.run_id), as_json)


@click.command("replay")
@click.argument("run_id")
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the new run's id, its lineage and whether it was identical.")
@click.pass_context
def runs_replay(ctx, run_id, as_json, **choice):
    """Run RUN_ID again exactly: its template version, sampling and seed (batch-invariant if it was, or with
    --deterministic), every tool result from the record; says whether it came out identical token for token."""
    from .fork import replay

    with _user_errors():
        store, model, info, wiki = _setup(ctx.obj, run_id, choice)
        recorded = replay(store, run_id, model, info, wiki)
    _report(store.get_run(recorded.run_id), as_json)


@click.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="Print first_divergence {step, token} or null, and each step's equality.")
@click.pass_context
def runs_diff(ctx, run_a, run_b, as_json):
    """Where runs RUN_A and RUN_B first part (step and token), which steps match, their answers and outcomes."""
    from .run_diff import diff_runs
    from .store import Store

    store = Store.open(ctx.obj)
    runs = [store.get_run(run_id) for run_id in (run_a, run_b)]
    for run_id, run in zip((run_a, run_b), runs):
        if run is None:
            raise click.ClickException(f"no run with id {run_id}")
    difference = diff_runs(*runs)
    if as_json:
        click.echo(json.dumps(difference, indent=2, ensure_ascii=False))
        return
    for line in diff_lines(difference):
        click.echo(line)


def diff_lines(difference: dict) -> list[str]:
    """The diff as text: the divergence, one line per step (= matches, ≠ differs), the answers."""
    first = difference["first_divergence"]
    where = "none: the runs match step for step" if first is None else \
        f"step {first['step']} ({first['part']})" + ("" if first["token"] is None else f", {first['unit']} {first['token']}")
    lines = [f"A {difference['a']}", f"B {difference['b']}", f"first divergence: {where}"]
    lines += [f"{row['step']:>4} {'=' if row['equal'] else '≠'} {row['kinds'][0] or '–':<12} {row['kinds'][1] or '–'}"
              for row in difference["steps"]]
    answers, outcomes = difference["answers"], difference["outcomes"]
    lines.append(f"answers: {answers['a']} | {answers['b']} ({'the same' if answers['same'] else 'different'}); "
                 f"outcomes: {outcomes['a']['status']} | {outcomes['b']['status']}")
    return lines


def _setup(settings: Settings, run_id: str, choice: dict):
    """The store, the model to continue with (the run's sampling, overridden by the flags given,
    and its per-token log-probabilities when it had them) and a Wikipedia tool made only when needed."""
    from .fork import knob_values
    from .store import Store
    from .tools import wiki_tool_factory

    settings = settings.with_overrides(model_path=choice.pop("model_path"), device=choice.pop("device"),
                                       dtype=choice.pop("dtype"), base_url=choice.pop("base_url"),
                                       api_key=choice.pop("api_key"))
    backend, wiki_mode = choice.pop("backend"), choice.pop("wiki")
    store = Store.open(settings)
    parent = store.get_run(run_id)
    if parent is None:
        raise click.ClickException(f"no run with id {run_id}")
    recorded = parent.get("sampling") or {}
    sampling = {**knob_values(recorded), **{k: v for k, v in choice.items() if v is not None}}
    model, info = fork_model(settings, backend, sampling, recorded.get("logprobs"))
    return store, model, info, lambda: wiki_tool_factory(settings, wiki_mode)()


def fork_model(settings: Settings, backend: str, sampling: dict, logprobs: int | None):
    """(chat model, RunInfo): our engine (asking for per-token log-probabilities when the run had them), else
    another backend."""
    from .backends import BackendChoice, chat_model, engine_chat_model

    if backend != "engine":
        return chat_model(BackendChoice(backend, settings.model_path, settings.device, settings.dtype, sampling,
                                        base_url=settings.base_url, api_key=settings.api_key))
    from engine import load_model

    engine = load_model(settings.model_path, **settings.engine_options())
    return engine_chat_model(engine, sampling, logprobs=logprobs)


@contextmanager
def _user_errors():
    from .errors import user_errors

    try:
        yield
    except user_errors() as exc:
        raise click.ClickException(str(exc)) from exc


def _report(run: dict, as_json: bool) -> None:
    lineage = run.get("lineage") or {}
    if as_json:
        click.echo(json.dumps({"run_id": run["id"], "parent_run_id": run["parent_run_id"], "forked_at": run["forked_at"],
                               "answer": run["answer"], "status": run["status"], "correct": run["correct"],
                               "identical": lineage.get("identical"), "lineage": lineage}, indent=2, ensure_ascii=False))
        return
    from .lineage import lineage_line

    click.echo(f"run {run['id']}: {lineage_line(run)}")
    click.echo(f"answer: {run['answer']} ({run['status']}" + ("" if run["correct"] is None else
                                                               f", {'correct' if run['correct'] else 'wrong'}") + ")")
