"""Experiments: the configurations one batch sweeps (strategy × template version × backend/model × sampling
settings × self-consistency), each with a short key that names its runs in the store.

A sweep is a dict of axes, each a value or a list of values; templates go only with their own strategy.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from engine.sampling_params import sampling_knobs
from prompts.voting import STOP_RULES

from .runner import DEFAULT_OPTIONS, STRATEGIES, StrategyOptions

# Axes a sweep or a configuration may name besides the sampling knobs, and the keys a backend entry may have.
STRATEGY_AXES = ("strategy", "template", "self_consistency", "sc_stop", "sc_weighted")
BACKEND_KEYS = ("name", "backend", "model", "base_url")


@dataclass(frozen=True)
class Configuration:
    """One arm of an experiment; `name` is its key in the batch (made from what differs when not given)."""

    strategy: str
    template: str | None = None  # NAME or NAME@VERSION; None: the strategy's default version
    backend: str = "engine"
    model: str | None = None  # a GGUF path, or the served model's name (openai)
    base_urls: tuple[str, ...] = ()  # openai: the servers; several share the work (fan-out)
    sampling: tuple[tuple[str, object], ...] = ()  # (knob, value) pairs, sorted
    self_consistency: int = 1
    sc_stop: str | None = None  # adaptive self-consistency's stopping rule (prompts.voting.STOP_RULES)
    sc_weighted: bool = False
    backend_name: str = ""  # the backend entry's own name, when a config file gave one
    name: str = ""

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.sc_stop is not None and self.sc_stop not in STOP_RULES:
            raise ValueError(f"unknown sc_stop {self.sc_stop!r}; choose one of {', '.join(STOP_RULES)}")
        if int(self.self_consistency) < 1:
            raise ValueError("self_consistency must be at least 1")

    @property
    def sampling_dict(self) -> dict:
        return dict(self.sampling)

    def options(self, base: StrategyOptions) -> StrategyOptions:
        """The strategy options this configuration runs with."""
        return replace(base, self_consistency=int(self.self_consistency), sc_stop=self.sc_stop,
                       sc_weighted=bool(self.sc_weighted))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["base_urls"], data["sampling"] = list(self.base_urls), self.sampling_dict
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Configuration:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "base_urls": tuple(data.get("base_urls") or ()),
                      "sampling": _frozen(data.get("sampling") or {})})


def _frozen(sampling: dict) -> tuple[tuple[str, object], ...]:
    return tuple(sorted((k, v) for k, v in sampling.items() if v is not None))


def strategy_configs(strategies: Iterable[str], options: StrategyOptions = DEFAULT_OPTIONS) -> list[Configuration]:
    """One configuration per strategy, named by it: what a batch ran before experiments."""
    return [Configuration(s, self_consistency=options.self_consistency, sc_stop=options.sc_stop,
                          sc_weighted=options.sc_weighted, name=s) for s in dict.fromkeys(strategies)]


@dataclass
class Backend:
    """Where a configuration runs: a backend, its model and its servers (one entry of a config file's `backends`)."""

    backend: str = "engine"
    model: str | None = None
    base_urls: tuple[str, ...] = ()
    name: str = ""
    sampling: dict = field(default_factory=dict)  # knobs every configuration on it starts from (the CLI's flags)


def expand(sweep: dict, backends: list[Backend], template_strategy: Callable[[str], str]) -> list[Configuration]:
    """Every combination of the sweep's axes on every backend; a template only with its own strategy."""
    axes = {key: _as_list(value) for key, value in sweep.items() if _as_list(value)}
    _check_axes(axes, "sweep")
    by_strategy: dict[str, list[str]] = {}
    for spec in axes.pop("template", []):
        by_strategy.setdefault(template_strategy(spec), []).append(spec)
    strategies = list(dict.fromkeys(axes.pop("strategy", None) or by_strategy))
    for strategy, specs in by_strategy.items():
        if strategy not in strategies:
            raise ValueError(f"{specs[0]} is a {strategy} template, and {strategy} is not one of the swept strategies")
    names, values = list(axes), list(axes.values())
    return [configuration({"strategy": strategy, "template": template, **dict(zip(names, combo))}, backend)
            for strategy in strategies for template in by_strategy.get(strategy) or [None]
            for combo in itertools.product(*values) for backend in backends]


def configuration(entry: dict, backend: Backend, name: str = "") -> Configuration:
    """A configuration from one entry's axes (strategy, template, self-consistency, sampling knobs) on a backend."""
    _check_axes(entry, "configuration")
    knobs = {k: v for k, v in entry.items() if k in sampling_knobs()}
    return Configuration(entry["strategy"], entry.get("template"), backend.backend, backend.model, backend.base_urls,
                         _frozen({**backend.sampling, **knobs}), int(entry.get("self_consistency") or 1),
                         entry.get("sc_stop"), bool(entry.get("sc_weighted")), backend.name, name)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_axes(entry: dict, where: str) -> None:
    allowed = (*STRATEGY_AXES, *sampling_knobs())
    unknown = [key for key in entry if key not in allowed]
    if unknown:
        raise ValueError(f"unknown {where} key {unknown[0]!r}; allowed: {', '.join(allowed)}")


def named(configs: list[Configuration]) -> list[Configuration]:
    """Each configuration with a name: its own, else one made of what sets it apart; two alike are refused."""
    varying = _varying(configs)
    out = [c if c.name else replace(c, name=_name(c, varying)) for c in configs]
    seen: dict[str, Configuration] = {}
    for config in out:
        if config.name in seen:
            raise ValueError(f"two configurations are both {config.name!r}: give each a different setting or a name")
        seen[config.name] = config
    return out


def _varying(configs: list[Configuration]) -> set[str]:
    """Which fields (and sampling knobs, as `sampling.KNOB`) take more than one value across the configurations."""
    fields = {"backend": lambda c: (c.backend_name, c.backend, c.model, c.base_urls)}
    knobs = {k for c in configs for k, _ in c.sampling}
    fields |= {f"sampling.{k}": (lambda c, k=k: c.sampling_dict.get(k)) for k in knobs}
    return {name for name, get in fields.items() if len({get(c) for c in configs}) > 1}


def _name(config: Configuration, varying: set[str]) -> str:
    parts = [_strategy_part(config)]
    if "backend" in varying:
        parts.append(config.backend_name or _model_part(config))
    parts += [f"{key.removeprefix('sampling.')}={value}" for key, value in
              sorted((f"sampling.{k}", v) for k, v in config.sampling) if key in varying]
    if config.self_consistency > 1:
        parts.append(f"sc{config.self_consistency}" + (f"-{config.sc_stop}" if config.sc_stop else "")
                     + ("-weighted" if config.sc_weighted else ""))
    return "/".join(parts)


def _strategy_part(config: Configuration) -> str:
    if config.template is None:
        return config.strategy
    return config.template if config.template.startswith(config.strategy) else f"{config.strategy}/{config.template}"


def _model_part(config: Configuration) -> str:
    model = Path(config.model).stem if config.model and config.backend != "openai" else (config.model or "default")
    return f"{config.backend}:{model}"
