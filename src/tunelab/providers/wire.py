"""Registry records in OpenAI's wire shapes: `fine_tuning.job`, its events and checkpoints,
`file` and `model`.

The registry's records are tunelab's own; these are what OpenAI's SDKs expect to read. The
server answers with them, and `tunelab jobs ... --json` prints the same job objects so that
scripts written against OpenAI's API read them unchanged. They live below both front ends so
that neither imports the other. Plain functions, no web framework.
"""

from __future__ import annotations

import json

from tunelab.providers.jobs import organization_of, queue_note, shown_hyperparameters
from tunelab.providers.methods import GRADER_KEY, method_object
from tunelab.registry import Checkpoint, Event, File, Job, Model


def job_grader(job: Job) -> dict | None:
    """A reinforcement job's grader, as it was given."""
    recorded = (job.metadata or {}).get(GRADER_KEY)
    return json.loads(recorded) if recorded else None


def method_settings(job: Job) -> dict:
    """The job's settings that name its method, as resolved where the provider says."""
    resolved = job.resolved_hyperparameters or {}
    method_keys = ("training_method", "dpo_beta")
    return {**(job.hyperparameters or {}), **{k: resolved[k] for k in method_keys if k in resolved}}


def job_object(job: Job) -> dict:
    """A registry job as OpenAI's `fine_tuning.job` object (plus a `tunelab` section)."""
    hyperparameters = shown_hyperparameters(job)
    error = None
    if job.error_code or job.error_message:
        error = {"code": job.error_code, "message": job.error_message, "param": None}
    metadata = {k: v for k, v in (job.metadata or {}).items() if not k.startswith("tunelab_")}
    return {
        "object": "fine_tuning.job",
        "id": job.id,
        "model": job.model,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": organization_of(job),
        "result_files": [],
        "status": job.status,
        "validation_file": job.validation_file,
        "training_file": job.training_file,
        "hyperparameters": hyperparameters,
        "method": method_object(method_settings(job), hyperparameters, job_grader(job)),
        "trained_tokens": job.trained_tokens,
        "error": error,
        "seed": job.seed,
        "estimated_finish": job.estimated_finish,
        "suffix": job.suffix,
        "metadata": metadata or None,
        "integrations": [],
        "tunelab": {
            "provider": job.provider,
            "provider_job_id": job.provider_job_id,
            "raw_status": job.raw_status,
            "name": job.name,
            "progress": job.progress,
            "output_dir": job.output_dir,
            "hyperparameters_given": job.hyperparameters or {},
            "queue": queue_note(job),
        },
    }


def event_object(event: Event) -> dict:
    return _object(
        "fine_tuning.job.event",
        event,
        ("id", "created_at", "level", "message", "type"),
        data=event.data or {},
    )


def checkpoint_object(point: Checkpoint) -> dict:
    metrics = point.metrics or {}
    return {
        "object": "fine_tuning.job.checkpoint",
        "id": point.id,
        "created_at": point.created_at,
        "fine_tuned_model_checkpoint": point.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": point.job_id,
        "step_number": point.step,
        "metrics": {
            "step": point.step,
            "train_loss": metrics.get("loss"),
            "train_mean_token_accuracy": metrics.get("mean_token_accuracy"),
            "valid_loss": metrics.get("val_loss"),
            "valid_mean_token_accuracy": metrics.get("val_mean_token_accuracy"),
        },
    }


def file_object(file: File) -> dict:
    names = ("id", "bytes", "created_at", "filename", "purpose", "status", "status_details")
    return _object("file", file, names, expires_at=None)


def _object(kind: str, record: object, names: tuple[str, ...], **more: object) -> dict:
    """The OpenAI object `kind`: `record`'s attributes `names`, then `more`, in that order."""
    return {"object": kind, **{name: getattr(record, name) for name in names}, **more}


def model_object(model: Model) -> dict:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created_at or 0,  # base models: no creation time to report
        "owned_by": model.provider,
        "tunelab": {
            "kind": model.kind,
            "provider": model.provider,
            "base_model": model.base_model,
            "job_id": model.job_id,
            **({"alias_of": model.details["alias_of"]} if "alias_of" in model.details else {}),
        },
    }
