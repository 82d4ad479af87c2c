"""An experiment's configurations from the command line's flags and an optional YAML file (`--config`).

    sweep:                 # every combination; each value a scalar or a list (the file's axes replace the flags')
      strategy: [cot, pal]
      template: [cot@1, cot@2]          # each template only with its own strategy
      temperature: [0.0, 0.7]           # any sampling knob
      self_consistency: [1, 8]
      sc_stop: beta                     # adaptive self-consistency: overtake or beta
    backends:              # each swept configuration runs on each (default: the command line's backend)
      - {name: local, backend: engine}
      - {name: vllm, backend: openai, model: Qwen/Qwen2.5-7B-Instruct, base_url: [http://a:8000/v1, http://b:8000/v1]}
    configurations:        # more, written out (on the command line's backend unless they name one)
      - {name: cot-asc16, strategy: cot, self_consistency: 16, sc_stop: beta, temperature: 0.7}
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import yaml

from .backends import BACKENDS
from .experiments import BACKEND_KEYS, Backend, Configuration, configuration, expand, named

FILE_KEYS = ("sweep", "backends", "configurations")


def plan_configurations(flags: dict, backend: Backend, config_path: str | Path | None,
                        template_strategy: Callable[[str], str]) -> list[Configuration]:
    """The named configurations of a batch: the flags' sweep, replaced axis by axis by the file's, plus its list."""
    sweep, backends, listed = dict(flags), [backend], []
    if config_path is not None:
        data = read_file(config_path)
        sweep.update(data.get("sweep") or {})
        backends = [_backend(entry, backend) for entry in data.get("backends") or []] or backends
        listed = [_listed(entry, backend) for entry in data.get("configurations") or []]
    swept = expand(sweep, backends, template_strategy) if sweep.get("strategy") or sweep.get("template") else []
    if not swept and not listed:
        raise ValueError("nothing to run: give --strategy or --template, or a --config file with a sweep or configurations")
    return named(swept + listed)


def read_file(path: str | Path) -> dict:
    """The file's mapping; ValueError (saying where) for unreadable YAML or unknown keys."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a mapping with {', '.join(FILE_KEYS)}")
    unknown = [key for key in data if key not in FILE_KEYS]
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; allowed: {', '.join(FILE_KEYS)}")
    for key, kind in (("sweep", dict), ("backends", list), ("configurations", list)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise ValueError(f"{path}: {key} must be a {'mapping' if kind is dict else 'list'}")
    return data


def _backend(entry: dict, default: Backend) -> Backend:
    """A `backends` entry: its backend, model and servers, starting from the command line's sampling."""
    if not isinstance(entry, dict):
        raise ValueError(f"a backends entry must be a mapping with {', '.join(BACKEND_KEYS)}")
    unknown = [key for key in entry if key not in BACKEND_KEYS]
    if unknown:
        raise ValueError(f"unknown backends key {unknown[0]!r}; allowed: {', '.join(BACKEND_KEYS)}")
    backend = entry.get("backend", "engine")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    urls = entry.get("base_url") or ()
    return Backend(backend, entry.get("model"), tuple([urls] if isinstance(urls, str) else urls),
                   str(entry.get("name") or ""), dict(default.sampling))


def _listed(entry: dict, default: Backend) -> Configuration:
    """A `configurations` entry: on its own backend when it names one, else on the command line's."""
    if not isinstance(entry, dict) or "strategy" not in entry:
        raise ValueError("each configurations entry needs at least a strategy")
    own = {key: entry[key] for key in BACKEND_KEYS if key in entry and key != "name"}
    backend = _backend(own, default) if own else replace(default)
    axes = {key: value for key, value in entry.items() if key not in BACKEND_KEYS}
    return configuration(axes, backend, str(entry.get("name") or ""))
