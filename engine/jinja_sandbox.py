"""A Jinja sandbox bounded in time and size, for templates from untrusted files (a GGUF's chat template).

Jinja's ImmutableSandboxedEnvironment stops a template from reaching Python's internals, but not
from running for ever (nested `range` loops, exponential macro recursion) or building a huge string
(`'x' * 10**9`, `'%0999999999d' % 1`, `s.replace(a, s)` in a loop). Here:
- time: a deadline checked on every line the template's compiled code runs (a trace function on the
  rendering thread only, so it works in any thread and never touches other threads' work);
- size: `*`, `+`, `%` and `**` are intercepted and refused when their result would pass the cap; so
  are number arguments past it (`center(10**9)`) and results past it, for calls and filters alike;
  the output is counted as it is produced; constant folding is off, so nothing runs at compile time.
Every failure is a TemplateLimitError; the caller maps it (and any other error) to its own.
"""
from __future__ import annotations

import functools
import math
import re
import sys
import time
from collections.abc import Iterator

from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_CHARS = 1 << 23  # any string or list a template builds, and its whole output; > a 1M-token prompt
MAX_POWER_BITS = 4096  # `a ** b` with a bigger result would take long to compute
TEMPLATE_FILENAME = "<template>"  # what Jinja names the code it compiles from a string
_HUGE_WIDTH = re.compile(r"\d{7,}")  # a format width or precision of a million or more characters


class TemplateLimitError(RuntimeError):
    """The template ran out of time or built something too large."""


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment whose operators, calls and filters cannot build values past MAX_CHARS."""

    intercepted_binops = frozenset({"*", "+", "%", "**"})

    def __init__(self, **options):
        super().__init__(optimized=False, **options)  # no constant folding: nothing runs when compiling
        self.filters = {name: _bounded(f) for name, f in self.filters.items()}

    def call_binop(self, context, operator: str, left, right):
        _check_binop(operator, left, right)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
        args = _check_arguments(__obj, args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


def render_bounded(template, timeout_s: float, **variables) -> str:
    """The template's output for `variables`, within `timeout_s` seconds and MAX_CHARS characters."""
    parts, total = [], 0
    with _Deadline(timeout_s):
        for chunk in _chunks(template, variables):
            total += len(chunk)
            if total > MAX_CHARS:
                raise TemplateLimitError(f"the output passed {MAX_CHARS:,} characters")
            parts.append(chunk)
    return "".join(parts)


def _chunks(template, variables: dict) -> Iterator[str]:
    yield from template.generate(**variables)


class _Deadline:
    """Raise TemplateLimitError in template code still running after `seconds` (this thread only)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        self.end, self.previous = time.monotonic() + self.seconds, sys.gettrace()
        sys.settrace(self._on_call)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(self.previous)

    def _on_call(self, frame, event, arg):
        # only the template's own code gets line events: Jinja's runtime and everything else run untraced
        return self._on_line if frame.f_code.co_filename == TEMPLATE_FILENAME else None

    def _on_line(self, frame, event, arg):
        if time.monotonic() > self.end:
            raise TemplateLimitError(f"rendering took longer than {self.seconds:g} s")
        return self._on_line


def _check_binop(operator: str, left, right) -> None:
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if _sized(seq) and isinstance(n, int) and len(seq) * n > MAX_CHARS:
                raise TemplateLimitError(f"a value of {len(seq):,} x {n:,} items is too large")
    elif operator == "+" and _sized(left) and _sized(right) and len(left) + len(right) > MAX_CHARS:
        raise TemplateLimitError("joining these values makes one that is too large")
    elif operator == "%" and isinstance(left, str):
        _check_format(left)
    elif operator == "**" and isinstance(left, int | float) and isinstance(right, int | float):
        if abs(left) > 1 and right * math.log2(abs(left)) > MAX_POWER_BITS:
            raise TemplateLimitError(f"{left} ** {right} is too large")


def _check_arguments(function, args: tuple, kwargs: dict) -> tuple:
    """Refuse number arguments past MAX_CHARS (widths, counts), huge format widths, and calls whose result
    would pass MAX_CHARS (replace, join, indent, wordwrap: the calls that multiply their inputs).
    Returns the arguments to call with: what join would iterate is made a list first, to be measured."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CHARS:
            raise TemplateLimitError(f"the number {value:,} is too large here")
    inner = getattr(function, "__wrapped__", function)  # the sandbox wraps str.format
    owner, name = getattr(inner, "__self__", None), getattr(inner, "__name__", "")
    if isinstance(owner, str):
        name = f"str.{name}"
    at = _JOINED.get(name)
    if at is not None and len(args) > at and not _sized(args[at]):
        args = (*args[:at], list(args[at]), *args[at + 1:])  # bounded: a sandbox range has at most 100,000 items
    estimate = _RESULT_SIZE.get(name)
    if estimate is not None and estimate(*((owner,) if isinstance(owner, str) else ()), *args, **kwargs) > MAX_CHARS:
        raise TemplateLimitError(f"{name.removeprefix('do_')} would make a string that is too large")
    return args


def _replace_size(text, old, new, *rest, **kwargs) -> int:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return 0
    return len(text) + (text.count(old) if old else len(text) + 1) * max(0, len(new) - len(old))


def _join_size(separator, items, *rest, **kwargs) -> int:
    if not isinstance(separator, str) or not _sized(items):
        return 0
    return len(separator) * len(items) + sum(len(x) if isinstance(x, str) else 32 for x in items)


def _indent_size(text, width=4, *rest, **kwargs) -> int:
    pad = width if isinstance(width, str) else " " * width if isinstance(width, int) else ""
    return len(text) + (text.count("\n") + 1) * len(pad) if isinstance(text, str) else 0


def _wrap_size(environment, text, width=79, break_long_words=True, wrapstring=None, *rest, **kwargs) -> int:
    if not isinstance(text, str) or not isinstance(wrapstring, str) or not isinstance(width, int) or width < 1:
        return 0
    return len(text) + (len(text) // width + 1) * len(wrapstring)


def _format_size(text, *args, **kwargs) -> int:
    return MAX_CHARS + 1 if isinstance(text, str) and _HUGE_WIDTH.search(text) else 0


# call or filter name -> an upper estimate of its result's length from its arguments (strings first)
_RESULT_SIZE = {
    "str.replace": _replace_size, "do_replace": lambda ctx, *a, **k: _replace_size(*a, **k),
    "str.join": _join_size, "do_join": lambda ctx, items, d="", *a, **k: _join_size(d, items),
    "do_indent": _indent_size, "do_wordwrap": _wrap_size,
    "str.format": _format_size, "str.format_map": _format_size, "do_format": _format_size,
}


_JOINED = {"str.join": 0, "do_join": 1}  # which argument join iterates (do_join's first is Jinja's eval context)


def _check_format(text: str) -> None:
    if _format_size(text):
        raise TemplateLimitError("a format width of a million characters or more")


def _check_size(value):
    if _sized(value) and len(value) > MAX_CHARS:
        raise TemplateLimitError(f"a value of {len(value):,} items is too large")
    return value


def _sized(value) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _bounded(filter_function):
    """A filter with the checks of BoundedSandbox.call; Jinja's pass_context/pass_environment marks are kept."""
    @functools.wraps(filter_function)
    def bounded(*args, **kwargs):
        args = _check_arguments(filter_function, args, kwargs)
        return _check_size(filter_function(*args, **kwargs))
    return bounded
