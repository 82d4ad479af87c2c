"""Click options shared by the `reason` commands that load or run a model."""
from __future__ import annotations

import click

MODEL_OPTION = click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
                            help="GGUF file (default: $REASON_MODEL or the bundled SmolLM2-135M-Instruct).")
DEVICE_OPTION = click.option("--device", default=None, help="auto, cpu or cuda (default: $REASON_DEVICE or auto).")
BACKEND_OPTION = click.option("--backend", type=click.Choice(["engine", "llamacpp", "openai"]), default="engine",
                              show_default=True,
                              help="engine: our engine in-process; llamacpp: llama-cpp-python on the same GGUF; "
                                   "openai: the OpenAI-compatible server of `reason serve` on this machine "
                                   "(--model names the served model).")
DTYPE_OPTION = click.option("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on GPUs and CPUs with "
                            "fast bf16, else fp32; float32 on CPU is the llama.cpp-exact reference).")


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
