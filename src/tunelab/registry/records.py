"""What the registry holds, as small typed records.

Every store backend (SQLite today, a server database later) returns these same types, so
the CLI, the server, the worker and evaluations read attributes instead of re-learning
column names. A backend builds one with `Record.from_row(mapping)`: JSON columns already
decoded, unknown keys (a column added by a later migration) ignored. Records are frozen:
a change goes through the store, which returns the new record.

`to_dict()` gives the plain fields (for `--json` output and tests); OpenAI's wire shapes
(`fine_tuning.job`, `file`, ...), which the server and `tunelab jobs --json` share, are in
`tunelab.providers.wire`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tunelab.errors import TunelabError
from tunelab.types import JobEvent

# What `tunelab.registry` offers beside the store.
__all__ = [
    "Checkpoint",
    "EvalOutput",
    "EvalRun",
    "Event",
    "File",
    "Job",
    "Model",
    "ModelAlias",
    "Record",
]

# Each kind of record a lookup can miss: what the error calls it, and where to find one.
_KINDS = {
    "file": ("file", "GET /v1/files on `tunelab serve` lists the files it holds"),
    "job": ("job", "`tunelab jobs list` shows the jobs tunelab knows"),
    "model": ("model", "`tunelab models list` shows the models tunelab knows"),
    "alias": ("alias", "`tunelab models alias` lists the aliases"),
    "eval_run": ("evaluation run", "`tunelab eval list` shows the runs"),
}


def not_found(kind: str, key: str) -> TunelabError:
    """The error for a `kind` of record (file, job, model, alias, eval_run) with no `key`."""
    name, hint = _KINDS[kind]
    return TunelabError(f"{kind}_not_found", f"no {name} {key} in the registry.", hint=hint)


R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class Record:
    @classmethod
    def from_row(cls: type[R], row: Mapping[Any, Any]) -> R:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class File(Record):
    """A training file: a local copy under `TUNELAB_HOME/files`, or one uploaded to a provider."""

    id: str
    provider: str
    filename: str
    purpose: str
    bytes: int
    checksum: str
    status: str  # "uploaded", "processed" or "error"
    created_at: int
    provider_file_id: str | None = None
    path: str | None = None
    validation: dict | None = None  # the validation report's summary

    @property
    def status_details(self) -> str | None:
        return (self.validation or {}).get("status_details")


@dataclass(frozen=True)
class Job(Record):
    """A fine-tuning job on any provider, with OpenAI's statuses (`raw_status` is its own)."""

    id: str
    provider: str
    model: str
    status: str
    created_at: int
    provider_job_id: str | None = None
    name: str | None = None
    training_file: str | None = None  # a registry file id
    validation_file: str | None = None
    hyperparameters: dict = field(default_factory=dict)  # only those the user gave
    resolved_hyperparameters: dict | None = None
    method: str | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict = field(default_factory=dict)
    raw_status: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    estimated_finish: int | None = None
    output_dir: str | None = None
    worker_id: str | None = None
    worker_pid: int | None = None
    worker_host: str | None = None
    heartbeat_at: float | None = None
    cancel_requested: int = 0
    progress: dict | None = None  # the latest step's metrics, with `step` and `total_steps`


@dataclass(frozen=True)
class Event(Record, JobEvent):
    """One line of a job's log, kept for `job_id`; `seq` orders a job's events and continues
    a read."""

    job_id: str = field(kw_only=True)
    seq: int = 0


@dataclass(frozen=True)
class Checkpoint(Record):
    id: str
    job_id: str
    step: int
    created_at: int
    fine_tuned_model_checkpoint: str | None = None  # a model name or a local path
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Model(Record):
    """A model tunelab knows: "base" (from the catalog) or "fine-tuned" (a job made it)."""

    id: str
    provider: str
    kind: str
    created_at: int | None = None
    base_model: str | None = None
    job_id: str | None = None
    path: str | None = None  # a local model's directory
    details: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()  # catalog base models only; not stored


@dataclass(frozen=True)
class ModelAlias(Record):
    """A name that answers as another model (`target`, a model the registry or a provider
    knows): `tunelab serve` answers an old model's name with its replacement."""

    alias: str
    target: str
    created_at: int


@dataclass(frozen=True)
class EvalRun(Record):
    """A recorded evaluation: what was evaluated on what data, and its metrics."""

    id: str
    kind: str
    status: str  # "running", "succeeded" or "failed"
    created_at: int
    models: list = field(default_factory=list)
    data: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    finished_at: int | None = None
    metrics: dict | None = None
    json_path: str | None = None
    html_path: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class EvalOutput(Record):
    """One scored answer of an evaluation run."""

    model: str
    item: int
    output: dict
