"""From `reason batch`'s flags to a job ready to run: the input read with its fields, the configurations planned
(or, on `--resume`, the batch's own), their templates, the batch started or resumed, and the models."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .batch import BatchJob, start_or_resume
from .batch_input import PLAIN_FIELDS, BatchInput, Fields, read_batch_input
from .experiments import Backend, Configuration
from .experiments_file import plan_configurations
from .experiments_models import ModelPool
from .fanout import RetryPolicy
from .runner import DEFAULT_TEMPLATES, StrategyOptions
from .settings import Settings
from .store import Store
from .templates import load_template

DEFAULT_CONCURRENCY = 4


@dataclass
class BatchRequest:
    """What `reason batch` was asked to do, as given (None: not given)."""

    input_path: str
    out_path: str
    strategies: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    config_path: str | None = None
    concurrency: int | None = None
    limit: int | None = None
    resume_id: str | None = None
    self_consistency: int | None = None
    sc_stop: str | None = None
    sc_weighted: bool = False
    sc_round: int = 2
    fields: Fields = PLAIN_FIELDS
    backend: str = "engine"
    model_path: str | None = None
    base_urls: tuple[str, ...] = ()
    sampling: dict = field(default_factory=dict)
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def names_configurations(self) -> bool:
        return bool(self.strategies or self.templates or self.config_path)


@dataclass
class Prepared:
    job: BatchJob
    batch_id: str
    models: ModelPool


def prepare(request: BatchRequest, settings: Settings, store: Store) -> Prepared:
    """Read the input, plan the configurations, start (or resume) the batch; ValueError for what the user can fix."""
    stored = _stored_settings(store, request.resume_id)
    fields = Fields(**stored["fields"]) if request.fields == PLAIN_FIELDS and stored.get("fields") else request.fields
    source = read_batch_input(request.input_path, fields)
    if not source.questions:
        raise ValueError(f"{request.input_path} has no usable question")
    configs = _configurations(request, settings, store, stored)
    concurrency = request.concurrency or _default_concurrency(configs, request.policy)
    job = BatchJob(source, [], Path(request.out_path), concurrency, request.limit, request.resume_id,
                   StrategyOptions(sc_round=request.sc_round), configs=configs)
    job.templates = {c.name: load_template(store, c.template or DEFAULT_TEMPLATES[c.strategy]) for c in configs}
    batch_id = start_or_resume(job, store, _record(request, settings, source, fields, concurrency))
    return Prepared(job, batch_id, ModelPool(settings, request.policy))


def _stored_settings(store: Store, resume_id: str | None) -> dict:
    batch = store.get_batch(resume_id) if resume_id else None
    if resume_id and batch is None:
        raise ValueError(f"no batch with id {resume_id}; see `reason batches`")
    return (batch or {}).get("settings") or {}


def _configurations(request: BatchRequest, settings: Settings, store: Store, stored: dict) -> list[Configuration]:
    """The flags' (and file's) configurations; on a resume without them, the batch's own, on the servers given."""
    if request.resume_id and not request.names_configurations and stored.get("configurations"):
        configs = [Configuration.from_dict(c) for c in stored["configurations"]]
        urls = request.base_urls
        return [replace(c, base_urls=urls) if urls and c.backend == "openai" else c for c in configs]
    flags = {"strategy": list(request.strategies), "template": list(request.templates),
             "self_consistency": request.self_consistency, "sc_stop": request.sc_stop,
             "sc_weighted": request.sc_weighted or None}
    backend = Backend(request.backend, request.model_path or (settings.model_path if request.backend != "openai" else None),
                      request.base_urls, sampling={k: v for k, v in request.sampling.items() if v is not None})
    return plan_configurations(flags, backend, request.config_path, lambda spec: load_template(store, spec).strategy)


def _default_concurrency(configs: list[Configuration], policy: RetryPolicy) -> int:
    """4 questions at a time, or enough to keep every server of the widest fan-out busy."""
    widest = max((len(c.base_urls) for c in configs if c.backend == "openai"), default=0)
    return max(DEFAULT_CONCURRENCY, widest * policy.per_server)


def _record(request: BatchRequest, settings: Settings, source: BatchInput, fields: Fields, concurrency: int) -> dict:
    """The batch's settings as stored: enough to resume it (the input, its fields) and to read it later."""
    return {"sampling": request.sampling, "backend": request.backend, "model": request.model_path or settings.model_path,
            "base_url": settings.base_url if request.backend == "openai" else None, "base_urls": list(request.base_urls),
            "concurrency": concurrency, "limit": request.limit,
            "input_path": str(Path(source.path).resolve()), "fields": fields.to_dict(), "sc_round": request.sc_round}
