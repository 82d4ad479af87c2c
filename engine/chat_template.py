"""Render a GGUF's `tokenizer.chat_template` (Jinja) into a prompt, in a sandboxed environment.

A GGUF file is untrusted input: its template runs in Jinja's ImmutableSandboxedEnvironment
(llama-cpp-python once had a remote-code-execution CVE from a plain Environment), bounded in time
and size (jinja_sandbox.py); whatever goes wrong while compiling or rendering is one ChatTemplateError.
Files without a template get the LLaMA-2 `[INST]` format. A template that reads a `tools` variable
(HF's convention: OpenAI-shaped function specs) is given the request's tools.
"""
from __future__ import annotations

import json

from jinja2 import meta

from .jinja_sandbox import BoundedSandbox, TemplateLimitError, render_bounded

MAX_SOURCE_CHARS = 1 << 20  # real templates are a few kB; tool-aware ones ~20 kB
RENDER_TIMEOUT_S = 2.0  # real templates render in milliseconds

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)


class ChatTemplateError(ValueError):
    pass


def _raise(message: str):
    raise ChatTemplateError(message)


def _tojson(value, indent: int | None = None) -> str:
    if indent is not None and not (isinstance(indent, int) and 0 <= indent <= 16):
        raise ChatTemplateError(f"tojson: indent must be a number of spaces up to 16, not {str(indent)[:20]!r}")
    return json.dumps(value, indent=indent, ensure_ascii=False)


class ChatTemplate:
    """A compiled chat template plus the special tokens it may refer to."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "",
                 timeout_s: float = RENDER_TIMEOUT_S):
        self.source = source or LLAMA2_TEMPLATE
        self.is_fallback = source is None
        self.bos_token, self.eos_token, self.timeout_s = bos_token, eos_token, timeout_s
        if not isinstance(self.source, str) or len(self.source) > MAX_SOURCE_CHARS:
            raise ChatTemplateError(f"the model's chat template is not text of at most {MAX_SOURCE_CHARS:,} characters")
        env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = _tojson
        try:
            parsed = env.parse(self.source)
            self._template = env.from_string(parsed)
            self.takes_tools = "tools" in meta.find_undeclared_variables(parsed)
        except Exception as exc:  # noqa: BLE001 - syntax errors, and RecursionError from deep nesting
            raise ChatTemplateError(f"the model's chat template does not compile: {_reason(exc)}") from exc

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}]); `tools` only reach a template that reads them."""
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ChatTemplateError(f"message {i} must be a dict with 'role' and 'content'")
        extra = {"tools": tools} if tools and self.takes_tools else {}
        try:
            return render_bounded(self._template, self.timeout_s, messages=messages,
                                  add_generation_prompt=add_generation_prompt, bos_token=self.bos_token,
                                  eos_token=self.eos_token, **extra)
        except ChatTemplateError:  # raise_exception() in the template: its own words
            raise
        except Exception as exc:  # noqa: BLE001 - a file's template may fail in any way; each is this one error
            raise ChatTemplateError(f"the model's chat template failed: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """The error in a line: its type when that says something the message does not."""
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    if isinstance(exc, TemplateLimitError) or type(exc).__module__.startswith("jinja2"):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
