"""Prompt templates by version: the shipped files are version 1, edits are saved in the store as 2, 3, …

Which version runs when none is named is explicit: the one promoted (`reason templates promote
NAME@V`, the templates page), else version 1. Saving a version never changes it.
"""
from __future__ import annotations

import re
from dataclasses import replace

from prompts.template import PromptTemplate, TemplateError, parse_template, shipped_template_body, shipped_template_names

from .store import Store

VERSION_LINE = re.compile(r"^version:.*$", re.MULTILINE)  # the YAML's top-level version field


def sync_shipped(store: Store) -> None:
    """Record every shipped template as version 1: a read, and a write only while one is missing."""
    store.ensure_shipped_templates({name: shipped_template_body(name) for name in shipped_template_names()})


def parse_spec(spec: str) -> tuple[str, int | None]:
    """'cot@3' -> ('cot', 3); 'cot' -> ('cot', None) meaning the default version."""
    name, _, version = spec.partition("@")
    if version and not version.isdigit():
        raise TemplateError(f"'{spec}': the version after @ must be a number, e.g. cot@2")
    return name.strip(), int(version) if version else None


def default_version(store: Store, name: str) -> int:
    """The version that runs when none is named: the promoted one, else 1 (the shipped file)."""
    return store.default_template_version(name) or 1


def load_template(store: Store, spec: str) -> PromptTemplate:
    """The template NAME@VERSION, or NAME's default version, validated."""
    sync_shipped(store)
    name, version = parse_spec(spec)
    if store.latest_template_version(name) is None:
        raise TemplateError(f"no template named '{name}'; shipped: {', '.join(shipped_template_names())}")
    version = version or default_version(store, name)
    try:
        body = store.get_template(name, version)
    except KeyError as exc:
        raise TemplateError(f"template '{name}' has no version {version}") from exc
    return replace(parse_template(body, source=f"{name}@{version}"), name=name, version=version)


def save_template(store: Store, name: str, body: str, note: str = "") -> int:
    """Validate and save an edited template as the next version (its YAML says that version); nothing is saved
    when it is invalid. The default version stays as it was."""
    sync_shipped(store)
    template = parse_template(body, source=name)
    if template.name != name:
        raise TemplateError(f"the YAML says name '{template.name}' but it is being saved as '{name}'")
    return store.save_template(name, body, note, stamp=lambda text, version: VERSION_LINE.sub(f"version: {version}", text, 1))


def promote_template(store: Store, spec: str) -> tuple[str, int]:
    """Make NAME@VERSION the version that runs when none is named; (name, version)."""
    sync_shipped(store)
    name, version = parse_spec(spec)
    if version is None:
        raise TemplateError(f"'{spec}': name the version to promote, e.g. {name}@2")
    try:
        parse_template(store.get_template(name, version), source=f"{name}@{version}")
        store.promote_template(name, version)
    except KeyError as exc:
        raise TemplateError(f"template '{name}' has no version {version}") from exc
    return name, version
