"""The trace store's tables as SQLModel classes, and their rows as JSON-ready dicts.

The classes mirror the tables the migrations create (a test holds the two equal); the migrations,
not these classes, define the schema.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from prompts.trace import STATUSES

RUN_STATUSES = ("running", *STATUSES)
BATCH_STATUSES = ("running", "finished", "interrupted")


class Run(SQLModel, table=True):
    """One question answered by one strategy; written `running` at the start, completed at the end."""

    __tablename__ = "run"
    __table_args__ = (sa.Index("ix_run_created_at", "created_at"),
                      sa.Index("ix_run_batch", "batch_id", "strategy", "question_id"),
                      sa.Index("ix_run_template", "template_name", "template_version"),
                      sa.Index("ix_run_parent", "parent_run_id"),
                      sa.Index("ix_run_strategy_status", "strategy", "status"),
                      sa.Index("ix_run_batch_config", "batch_id", "config", "question_id"))
    # The table also has `seq INTEGER PRIMARY KEY`, a stable rowid for the FTS index, unmapped on purpose.
    id: str = Field(primary_key=True)
    created_at: datetime
    strategy: str
    question: str
    expected: str | None = None
    answer: str | None = None
    correct: bool | None = None
    status: str = "running"  # one of RUN_STATUSES
    error: str | None = None
    model_id: str = ""
    model_hash: str | None = None
    backend: str = ""
    template_name: str = ""
    template_version: int = 0
    sampling_json: str = "{}"
    counters_json: str = "{}"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_ms: float = 0.0
    batch_id: str | None = Field(default=None, foreign_key="batch.id", ondelete="SET NULL")
    question_id: str | None = None
    config: str | None = None  # the batch configuration's key; None: a run from before experiments (its strategy)
    parent_run_id: str | None = Field(default=None, foreign_key="run.id", ondelete="SET NULL")  # forked or replayed
    forked_at: int | None = None  # the step it forked at: the steps before it are the parent's, from the record
    lineage_json: str = "{}"  # how it was made: kind (fork, branch, replay), what changed, a replay's identity


class Step(SQLModel, table=True):
    """One step of a run's trace (LLM call, tool call, parse error, vote), numbered by idx."""

    __tablename__ = "step"
    __table_args__ = (sa.Index("ix_step_run_id", "run_id", "idx", unique=True),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", ondelete="CASCADE")  # deleting a run deletes its steps
    idx: int
    kind: str
    name: str = ""
    input: str = ""
    output: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_ms: float = 0.0
    error: str | None = None
    meta_json: str = "{}"


class PromptTemplate(SQLModel, table=True):
    """One version of a prompt template's YAML; version 1 is the shipped file."""

    __tablename__ = "prompt_template"
    __table_args__ = (sa.UniqueConstraint("name", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    version: int
    body: str
    created_at: datetime
    note: str = ""


class TemplateDefault(SQLModel, table=True):
    """The version of a template that runs when none is named (set by promoting it); without a row, version 1."""

    __tablename__ = "template_default"
    __table_args__ = (sa.ForeignKeyConstraint(["name", "version"], ["prompt_template.name", "prompt_template.version"]),)
    name: str = Field(primary_key=True)
    version: int
    promoted_at: datetime


class Batch(SQLModel, table=True):
    """One `reason batch` over an input file, with counts recomputed from its runs."""

    __tablename__ = "batch"
    id: str = Field(primary_key=True)
    created_at: datetime
    input_name: str
    input_hash: str
    strategies_json: str = "[]"
    settings_json: str = "{}"
    total: int = 0
    done: int = 0
    correct: int = 0
    errors: int = 0
    status: str = "running"  # one of BATCH_STATUSES
    started_at: datetime | None = None
    finished_at: datetime | None = None


def now() -> datetime:
    """Now, in UTC (SQLite keeps it without the offset)."""
    return datetime.now(UTC)


def utc(value: datetime) -> datetime:
    # Older SQLModel versions read DATETIME columns back naive; they were written as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_json(value: Any) -> str:
    """JSON text for a dict, list or dataclass (e.g. Settings); Paths and other oddities become strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value if value is not None else {}, default=str, ensure_ascii=False)


def plain(row: SQLModel) -> dict:
    """A row as a JSON-ready dict: `x_json` columns decoded into `x`, datetimes as ISO strings."""
    out = {}
    for key in type(row).model_fields:
        value = getattr(row, key)
        if key.endswith("_json"):
            out[key.removesuffix("_json")] = json.loads(value) if value else None
        elif isinstance(value, datetime):
            out[key] = utc(value).isoformat()
        else:
            out[key] = value
    return out
