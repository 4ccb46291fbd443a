"""Jobs on a hosted service, as the registry records them: the `Provider` defaults.

A job's record is created before its provider hears of it (status `validating_files`), so a
crash between the two leaves a visible failed job rather than an orphan the registry does not
know. Hosted jobs are synced from their provider whenever they are read and not yet finished;
their events and checkpoints are copied into the registry once each.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.data.validate import ValidationReport
from tunelab.errors import TunelabError
from tunelab.io import file_sha256
from tunelab.providers.base import REQUEST_ID_KEY, TERMINAL_STATUSES, JobRequest, JobState
from tunelab.providers.methods import GRADER_KEY, openai_hyperparameters
from tunelab.providers.registry import get_provider
from tunelab.registry import File, Job, new_id

if TYPE_CHECKING:
    from tunelab.registry import Store


# TrainConfig's `method` (lora|full) is `training_type` for hosted providers, whose `method`
# is OpenAI's (supervised|dpo).
HOSTED_RENAMES = {"method": "training_type"}
BASE_URL_KEY = "tunelab_base_url"  # job metadata: the endpoint a job was created on
IMPORTED_KEY = "tunelab_imported"  # job metadata: started elsewhere, tracked by tunelab
KEY_ENV_KEY = "tunelab_key_env"  # job metadata: the variable holding that endpoint's key
# What a provider's word on a job sets on its record, under the same names.
STATE_FIELDS = (
    "status",
    "raw_status",
    "fine_tuned_model",
    "finished_at",
    "trained_tokens",
    "estimated_finish",
    "error_code",
    "error_message",
)


def provider_of(job: Job):
    """The provider instance that holds `job` (built only when it must be called)."""

    metadata = job.metadata or {}
    return get_provider(
        job.provider, base_url=metadata.get(BASE_URL_KEY), key_variable=metadata.get(KEY_ENV_KEY)
    )


def create(store: Store, spec, report: ValidationReport) -> Job:
    """Record the job, upload its files, create it on the provider; returns the job."""

    provider = get_provider(spec.provider, base_url=spec.base_url, key_variable=spec.key_variable)
    metadata = {**spec.metadata, REQUEST_ID_KEY: new_id("req")}
    if spec.base_url:
        metadata[BASE_URL_KEY] = spec.base_url
    if spec.key_variable:
        metadata[KEY_ENV_KEY] = spec.key_variable
    job = store.create_job(
        **_copied(spec, "provider", "model", "name", "hyperparameters", "suffix", "seed"),
        metadata=metadata,
        status="validating_files",
        raw_status="validating_files",
    )
    try:
        train = upload(store, provider, spec.training_file, report)
        val = (
            upload(store, provider, spec.validation_file, report) if spec.validation_file else None
        )
        state = provider.create_job(_request(spec, train, val, metadata))
    except TunelabError as err:
        store.update_job(
            job.id,
            status="failed",
            raw_status="not_created",
            error_code=err.code,
            error_message=err.message,
            finished_at=int(time.time()),
        )
        raise
    store.update_job(
        job.id,
        provider_job_id=state.id,
        training_file=train.id,
        validation_file=val.id if val else None,
    )
    return apply_state(store, store.get_job(job.id), state)


def _request(spec, train: File, val: File | None, metadata: dict) -> JobRequest:
    """The provider's create request, on its own file ids, in OpenAI's terms."""
    method, hyperparameters = openai_hyperparameters(spec.hyperparameters)
    return JobRequest(
        model=spec.model,
        training_file=_provider_file_id(train),
        validation_file=_provider_file_id(val) if val else None,
        hyperparameters={HOSTED_RENAMES.get(k, k): v for k, v in hyperparameters.items()},
        method=method,
        grader=spec.grader,
        suffix=spec.suffix,
        seed=spec.seed,
        metadata={k: str(v) for k, v in metadata.items()},
    )


def _provider_file_id(file: File) -> str:
    """The provider's id of a file `upload` registered (every such record holds one)."""
    assert file.provider_file_id is not None, f"file {file.id} has no provider id"
    return file.provider_file_id


def upload(store: Store, provider, path: Path, report: ValidationReport) -> File:
    """The registry's record of `path` on the provider: uploaded once per distinct content."""
    checksum = file_sha256(path)
    known = store.find_file(provider.name, checksum, "fine-tune")
    if known is not None:
        return known
    remote = provider.upload_file(path)
    return store.add_file(
        provider=provider.name,
        provider_file_id=remote.id,
        filename=path.name,
        purpose="fine-tune",
        bytes=remote.bytes,
        checksum=checksum,
        status=remote.status,
        path=str(path),
        validation=report.to_dict(),
    )


def import_state(store: Store, provider, state: JobState) -> tuple[Job, bool]:
    """Track a job started outside tunelab (on `provider`); returns (the job, whether new).

    Importing again updates the job instead of adding a second one. Its file columns hold
    the provider's file ids until the files are registered (`store.get_file` takes either).
    """
    known = _imported(store, provider.name, state.id)
    if known is not None:
        return apply_state(store, known, state), False
    metadata = {**state.metadata, IMPORTED_KEY: "true"}
    if provider.base_url:
        metadata[BASE_URL_KEY] = provider.base_url
    job = store.create_job(
        provider=provider.name,
        provider_job_id=state.id,
        hyperparameters={},
        metadata=metadata,
        created_at=state.created_at or int(time.time()),
        **_copied(
            state, "model", "suffix", "status", "raw_status", "training_file", "validation_file"
        ),
    )
    job = apply_state(store, job, state)
    sync_events(store, job, provider)
    return job, True


def _imported(store: Store, provider: str, provider_job_id: str) -> Job | None:
    try:
        job = store.get_job(provider_job_id)
    except TunelabError:
        return None
    same = job.provider == provider and job.provider_job_id == provider_job_id
    return job if same else None


def refresh(store: Store, job: Job, *, events: bool = True) -> Job:
    """The job synced from its provider, unless it has finished (or never reached it).

    A finished job (succeeded, failed or cancelled) is as it was last recorded: its events
    were synced when it finished, and a failed job has no model to wait for, so listing
    jobs never asks the provider about it again (after OpenAI's shutdown it could not
    answer). `tunelab jobs import` fetches one again on request.
    """
    if job.status in TERMINAL_STATUSES:
        return job
    if not job.provider_job_id:
        return job  # never reached its provider (see error_message)
    provider = provider_of(job)
    job = apply_state(store, job, provider.retrieve_job(job.provider_job_id))
    if events:
        sync_events(store, job, provider)
    return job


def apply_state(store: Store, job: Job, state: JobState) -> Job:
    """Record what the provider says of the job; a finished job's model joins the registry."""
    job = _updated(
        store.update_job(
            job.id,
            **_copied(state, *STATE_FIELDS),
            resolved_hyperparameters=state.hyperparameters or None,
            **_grader_update(job, state.grader),
        )
    )
    if state.status == "succeeded" and state.fine_tuned_model:
        store.put_model(
            state.fine_tuned_model,
            provider=job.provider,
            kind="fine-tuned",
            base_model=job.model,
            job_id=job.id,
            details={
                "base_url": job.metadata.get(BASE_URL_KEY),
                "key_variable": job.metadata.get(KEY_ENV_KEY),
            },
        )
    return job


def _grader_update(job: Job, grader: dict | None) -> dict:
    """The metadata that keeps a reinforcement job's grader where local jobs keep theirs
    (`GRADER_KEY`), so that job objects show it and a migration trains with it."""
    metadata = job.metadata or {}
    if grader is None or GRADER_KEY in metadata:
        return {}
    return {"metadata": {**metadata, GRADER_KEY: json.dumps(grader)}}


def sync_events(store: Store, job: Job, provider=None) -> None:
    """Copy a hosted job's events and checkpoints into the registry (each once)."""
    if not job.provider_job_id:
        return
    provider = provider or provider_of(job)
    for event in provider.list_events(job.provider_job_id):
        store.add_event(
            job.id,
            event.message,
            **_copied(event, "level", "type", "data", "created_at"),
            event_id=f"{job.provider}:{event.id}",
        )
        if event.type == "metrics" and isinstance((event.data or {}).get("step"), int):
            store.add_metric(job.id, event.data["step"], event.data)
    for point in provider.list_checkpoints(job.provider_job_id):
        store.add_checkpoint(
            job.id,
            point.step,
            **_copied(point, "created_at", "fine_tuned_model_checkpoint", "metrics"),
            checkpoint_id=point.id,
        )


def stop(store: Store, job: Job, *, pause: bool) -> Job:
    provider = provider_of(job)
    call = provider.pause_job if pause else provider.cancel_job
    return apply_state(store, job, call(job.provider_job_id))


def resume(store: Store, job: Job) -> Job:
    return apply_state(store, job, provider_of(job).resume_job(job.provider_job_id))


def import_job(
    store: Store,
    provider_name: str,
    job_id: str,
    *,
    base_url: str | None = None,
    key_variable: str | None = None,
) -> Job:
    """Track a job started outside tunelab: recorded once, then synced like any other."""

    provider = get_provider(provider_name, base_url=base_url, key_variable=key_variable)
    job, new = import_state(store, provider, provider.retrieve_job(job_id))
    if new and key_variable:
        job = _updated(
            store.update_job(job.id, metadata={**job.metadata, KEY_ENV_KEY: key_variable})
        )
    return job


def _copied(source: object, *names: str) -> dict[str, Any]:
    """`source`'s attributes `names`, keyed by the same names: the providers' records and the
    registry's columns both speak OpenAI's vocabulary, so a field is copied under its name
    (the store refuses a name it does not have, as Python refuses an unknown keyword)."""
    return {name: getattr(source, name) for name in names}


def _updated(job: Job | None) -> Job:
    """The job `store.update_job` returns when given no `expect` (only an `expect` that did
    not match gives None; a job that is not there raises job_not_found)."""
    assert job is not None, "update_job without expect returned no job"
    return job
