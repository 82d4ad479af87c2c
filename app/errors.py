"""Which failures a user can cause, so a run records them as data, and which are bugs that must surface."""
from __future__ import annotations

import functools


class RunStopped(Exception):
    """Raised inside a model call after the user pressed Stop; the run ends `stopped`, not `error`."""


@functools.cache
def user_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause: a bad template, parameter or file, an unreachable or failing server, a full queue, Stop.

    A run that ends in one of these is stored as an `error` run (Stop: `stopped`) and not raised; anything else is a bug,
    stored too, then raised. Built on first use (in an `except` clause, only once something was raised),
    so a command that never fails never imports the HTTP clients or the engine.
    """
    import httpx
    import openai

    from engine import QueueFullError

    # ValueError covers TemplateError, ModelFileError, ContextLengthError and SamplingParams.validate;
    # OSError covers ConnectionError, TimeoutError, FileNotFoundError (a missing Wikipedia corpus).
    return (ValueError, OSError, RunStopped, QueueFullError, httpx.HTTPError, openai.OpenAIError)
