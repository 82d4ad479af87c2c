"""Render a GGUF's `tokenizer.chat_template` (Jinja) into a prompt, in a sandboxed environment.

A GGUF file is untrusted input: its template runs in Jinja's ImmutableSandboxedEnvironment
(llama-cpp-python once had a remote-code-execution CVE from a plain Environment).
Files without a template get the LLaMA-2 `[INST]` format. A template that reads a `tools` variable
(HF's convention: OpenAI-shaped function specs) is given the request's tools.
"""
from __future__ import annotations

import json

from jinja2 import TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

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


class ChatTemplate:
    """A compiled chat template plus the special tokens it may refer to."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = ""):
        self.source = source or LLAMA2_TEMPLATE
        self.is_fallback = source is None
        self.bos_token, self.eos_token = bos_token, eos_token
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent, ensure_ascii=False)
        try:
            self._template = env.from_string(self.source)
        except TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template does not compile: {exc}") from exc
        self.takes_tools = "tools" in meta.find_undeclared_variables(env.parse(self.source))

    def render(self, messages: list[dict], add_generation_prompt: bool = True, tools: list[dict] | None = None) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}]); `tools` only reach a template that reads them."""
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ChatTemplateError(f"message {i} must be a dict with 'role' and 'content'")
        try:
            extra = {"tools": tools} if tools and self.takes_tools else {}
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token, **extra)
        except TemplateError as exc:  # includes SecurityError from the sandbox
            raise ChatTemplateError(f"the model's chat template failed: {exc}") from exc
