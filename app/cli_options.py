"""Click options shared by the `reason` commands that load or run a model."""
from __future__ import annotations

import click

from engine.sampling_params import sampling_knobs

from .backends import BACKENDS

MODEL_OPTION = click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
                            help="GGUF file (default: $REASON_MODEL or the bundled SmolLM2-135M-Instruct); "
                                 "with --backend openai, the served model's name (default: the server's first).")
DEVICE_OPTION = click.option("--device", default=None, help="auto, cpu or cuda (default: $REASON_DEVICE or auto).")
BACKEND_OPTION = click.option("--backend", type=click.Choice(BACKENDS), default="engine", show_default=True,
                              help="engine: our engine in-process; llamacpp: llama-cpp-python on the same GGUF; "
                                   "openai: any OpenAI-compatible server (--base-url).")
BASE_URL_OPTION = click.option("--base-url", default=None, metavar="URL",
                               help="The OpenAI-compatible server, ending in /v1 (default: $REASON_BASE_URL, else "
                                    "http://127.0.0.1:8000/v1 where `reason serve` listens).")
API_KEY_OPTION = click.option("--api-key", default=None, metavar="KEY",
                              help="Sent to that server as 'Authorization: Bearer KEY' (default: $REASON_API_KEY).")
DTYPE_OPTION = click.option("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on GPUs and CPUs with "
                            "fast bf16, else fp32; float32 on CPU is the llama.cpp-exact reference).")

# The flags' types and help, keyed by SamplingParams knob; the names come from the engine (sampling_knobs()).
KNOB_FLAGS = {
    "temperature": (click.FloatRange(min=0), "0 = greedy (default)."),
    "top_k": (click.IntRange(min=0), "0 = off."),
    "top_p": (click.FloatRange(0, 1, min_open=True), None),
    "min_p": (click.FloatRange(0, 1), None),
    "typical_p": (click.FloatRange(0, 1, min_open=True), None),
    "repetition_penalty": (click.FloatRange(min=0, min_open=True), "1 = off."),
    "frequency_penalty": (click.FloatRange(-2, 2), None),
    "presence_penalty": (click.FloatRange(-2, 2), None),
    "seed": (click.IntRange(min=0), None),
    "max_tokens": (click.IntRange(min=1), "Per model call (default 512)."),
    "draft_tokens": (click.IntRange(0, 16), "Speculative decoding: prompt-lookup draft tokens per step (engine; 0 = off)."),
    "deterministic": (click.BOOL, "Batch-invariant decoding: the same tokens alone or in any batch (engine)."),
}


def sampling_options(fn):
    """A flag per sampling knob (--temperature, --top-p, …), each None unless given."""
    for name in reversed(sampling_knobs()):
        kind, help_text = KNOB_FLAGS.get(name, (click.FLOAT, None))
        flag = f"--{name.replace('_', '-')}"
        if kind is click.BOOL:  # a switch: None unless given
            fn = click.option(flag, name, is_flag=True, flag_value=True, default=None, help=help_text)(fn)
        else:
            fn = click.option(flag, name, type=kind, default=None, help=help_text)(fn)
    return fn
