"""Prompt templates by version: the shipped files are version 1, edits are saved in the store as 2, 3, …"""
from __future__ import annotations

from dataclasses import replace

from prompts.template import PromptTemplate, TemplateError, parse_template, shipped_template_body, shipped_template_names

from .store import Store


def sync_shipped(store: Store) -> None:
    """Record every shipped template as version 1: a read, and a write only while one is missing."""
    store.ensure_shipped_templates({name: shipped_template_body(name) for name in shipped_template_names()})


def parse_spec(spec: str) -> tuple[str, int | None]:
    """'cot@3' -> ('cot', 3); 'cot' -> ('cot', None) meaning the latest version."""
    name, _, version = spec.partition("@")
    if version and not version.isdigit():
        raise TemplateError(f"'{spec}': the version after @ must be a number, e.g. cot@2")
    return name.strip(), int(version) if version else None


def load_template(store: Store, spec: str) -> PromptTemplate:
    """The template NAME or NAME@VERSION (latest when no version), validated."""
    sync_shipped(store)
    name, version = parse_spec(spec)
    version = version or store.latest_template_version(name)
    if version is None:
        raise TemplateError(f"no template named '{name}'; shipped: {', '.join(shipped_template_names())}")
    try:
        body = store.get_template(name, version)
    except KeyError as exc:
        raise TemplateError(f"template '{name}' has no version {version}") from exc
    return replace(parse_template(body, source=f"{name}@{version}"), name=name, version=version)


def save_template(store: Store, name: str, body: str, note: str = "") -> int:
    """Validate and save an edited template as the next version; nothing is saved when it is invalid."""
    sync_shipped(store)
    template = parse_template(body, source=name)
    if template.name != name:
        raise TemplateError(f"the YAML says name '{template.name}' but it is being saved as '{name}'")
    return store.save_template(name, body, note)
