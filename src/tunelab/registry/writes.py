"""What a caller may write to a job or an evaluation run: the fields, typed.

`Store.create_job(**fields)`, `Store.update_job(job_id, **fields)` and
`Store.update_eval_run(run_id, **fields)` take these as keyword arguments: a type checker
reports a misspelt or mistyped field at the call, and at run time an unknown name is the
same `TypeError` Python raises for any unexpected keyword argument. New rows get ids from
`new_id`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Required


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: `ftjob-` and 24 random hex digits."""
    return f"{prefix}-{secrets.token_hex(12)}"


class _JobFields(TypedDict, total=False):
    provider_job_id: str | None
    name: str | None
    training_file: str | None  # a registry file id
    validation_file: str | None
    hyperparameters: dict[str, Any]
    resolved_hyperparameters: dict[str, Any] | None
    method: str | None
    suffix: str | None
    seed: int | None
    metadata: dict[str, Any]
    raw_status: str | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    error_code: str | None
    error_message: str | None
    fine_tuned_model: str | None
    trained_tokens: int | None
    estimated_finish: int | None
    output_dir: str | None
    worker_id: str | None
    worker_pid: int | None
    worker_host: str | None
    heartbeat_at: float | None
    cancel_requested: int
    progress: dict[str, Any] | None


class NewJob(_JobFields, total=False):
    """A job to insert: `provider`, `model` and `status` are required."""

    provider: Required[str]
    model: Required[str]
    status: Required[str]
    id: str  # generated when not given


class JobChanges(_JobFields, total=False):
    """Fields to set on a job; the others keep their values."""

    provider: str
    model: str
    status: str


class EvalRunChanges(TypedDict, total=False):
    """Fields to set on an evaluation run."""

    status: str
    finished_at: int | None
    metrics: dict[str, Any] | None
    json_path: str | None
    html_path: str | None
    error_message: str | None


def check_names(method: str, fields: Mapping[str, object], allowed: type) -> None:
    """Refuse a field `allowed` (a TypedDict) does not declare, as Python refuses a keyword."""
    for name in fields:
        if name not in allowed.__annotations__:
            raise TypeError(f"{method}() got an unexpected keyword argument {name!r}")
