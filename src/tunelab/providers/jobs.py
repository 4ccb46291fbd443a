"""Fine-tuning jobs on every provider, recorded in the registry: the API the CLI and server use.

A job's record is created before its provider hears of it (status `validating_files`), so a
crash between the two leaves a visible failed job rather than an orphan the registry does not
know. Local jobs live entirely in the registry (the worker writes their progress); hosted
jobs are synced from their provider whenever they are read and not yet finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.catalog import DEFAULT_MODEL, ModelSpec, local_model_spec, resolve_model
from tunelab.data.validate import ValidationReport, validate_file
from tunelab.errors import TunelabError
from tunelab.providers import local
from tunelab.providers.base import (
    REQUEST_ID_KEY,
    TERMINAL_STATUSES,
    JobRequest,
    JobState,
)
from tunelab.providers.provider import FINE_TUNING, Provider
from tunelab.providers.registry import check_provider, get_provider, provider_names
from tunelab.registry import Store, new_id

PROVIDERS = tuple(provider_names(FINE_TUNING))  # every provider that trains, plugins included
# TrainConfig's `method` (lora|full) is `training_type` for hosted providers, whose `method`
# is OpenAI's (supervised|dpo).
HOSTED_RENAMES = {"method": "training_type"}


@dataclass
class JobSpec:
    """What a user asks for. `hyperparameters` holds only the settings they gave."""

    training_file: Path
    validation_file: Path | None = None
    model: str = DEFAULT_MODEL
    provider: str = "local"
    hyperparameters: dict = field(default_factory=dict)
    suffix: str | None = None
    name: str | None = None
    seed: int | None = None
    metadata: dict = field(default_factory=dict)
    base_url: str | None = None


# -- creating -------------------------------------------------------------------------------


def validate_job_files(spec: JobSpec, progress=None) -> ValidationReport:
    """Validate the files for the base model; raise `invalid_training_data` on errors."""
    report = validate_file(
        spec.training_file,
        val_path=spec.validation_file,
        model=_model_spec(spec),
        progress=progress,
    )
    if not report.ok:
        error = TunelabError(
            "invalid_training_data",
            f"the data has {report.n_errors:,} error(s); no job was created.",
            hint=f"`tunelab validate {spec.training_file}` lists every finding",
            path=spec.training_file,
        )
        error.report = report  # the CLI shows the findings
        raise error
    return report


def _model_spec(spec: JobSpec) -> ModelSpec | None:
    if spec.provider == "local":
        info = local_base(spec.model)
        if info is None or info.kind == "bundled":
            return resolve_model(DEFAULT_MODEL)
        path = info.path
        has_tokenizer = (path / "tokenizer_config.json").exists() or (
            path / "tokenizer.json"
        ).exists()
        return local_model_spec(path) if has_tokenizer else None
    try:
        return resolve_model(spec.model)
    except TunelabError:
        return None  # a model the catalog does not list: the provider checks it


def local_base(model: str):
    """What a local `--model` names: a registry `ft:` model resolves to its directory."""
    from tunelab.engine.models import resolve_model_source

    if model.startswith("ft:"):
        with Store() as store:
            known = store.find_model(model)
        if known is None or known["provider"] != "local":
            raise TunelabError(
                "model_not_found",
                f"no local model {model} in the registry.",
                hint="`tunelab models list` shows the models tunelab knows",
                exit_code=2,
            )
        return resolve_model_source(known["path"])
    return resolve_model_source(model)


def create_job(spec: JobSpec, *, start_worker: bool = True, report=None) -> dict:
    """Validate the files, record the job and hand it to its provider; returns the job."""
    check_provider(spec.provider)
    report = report or validate_job_files(spec)
    with Store() as store:
        if spec.provider == "local":
            job = _create_local(store, spec, report)
            if start_worker:
                local.start_worker()
            return job
        return _create_hosted(store, spec, report)


def _create_local(store: Store, spec: JobSpec, report: ValidationReport) -> dict:
    from tunelab.engine import TrainConfig

    TrainConfig.from_settings(spec.hyperparameters)  # refuse bad settings before queueing
    info = local_base(spec.model)
    base_path = str(info.path) if spec.model.startswith("ft:") or info.kind != "bundled" else None
    summary = report.to_dict()
    train = local.register_file(store, spec.training_file, summary)
    val = (
        local.register_file(store, spec.validation_file, summary) if spec.validation_file else None
    )
    hyperparameters = dict(spec.hyperparameters)
    if spec.seed is not None:
        hyperparameters["seed"] = spec.seed
    return local.queue_job(
        store,
        model=spec.model if spec.model.startswith("ft:") else info.name,
        base_path=base_path,
        training_file=train,
        validation_file=val,
        hyperparameters=hyperparameters,
        suffix=spec.suffix,
        name=spec.name,
        seed=spec.seed,
        metadata=spec.metadata,
    )


def create_local_job_from_files(
    *,
    model: str,
    training_file: str,
    validation_file: str | None = None,
    hyperparameters: dict | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    metadata: dict | None = None,
    start_worker: bool = True,
) -> dict:
    """A local job on files already in the registry (the server's `POST /fine_tuning/jobs`)."""
    from tunelab.engine import TrainConfig

    hyperparameters = dict(hyperparameters or {})
    if seed is not None:
        hyperparameters["seed"] = seed
    TrainConfig.from_settings(hyperparameters)  # refuse bad settings before queueing
    info = local_base(model)
    with Store() as store:
        files = [_usable_file(store, training_file, "training_file")]
        if validation_file:
            files.append(_usable_file(store, validation_file, "validation_file"))
        base_path = str(info.path) if model.startswith("ft:") or info.kind != "bundled" else None
        job = local.queue_job(
            store,
            model=model if model.startswith("ft:") else info.name,
            base_path=base_path,
            training_file=files[0],
            validation_file=files[1] if len(files) > 1 else None,
            hyperparameters=hyperparameters,
            suffix=suffix,
            name=None,
            seed=seed,
            metadata=metadata or {},
        )
    if start_worker:
        local.start_worker()
    return job


def _usable_file(store: Store, file_id: str, role: str) -> dict:
    file = store.get_file(file_id)
    if file["provider"] != "local" or file["status"] != "processed":
        details = (file["validation"] or {}).get("status_details") or file["status"]
        raise TunelabError(
            "invalid_file",
            f"{role} {file_id} cannot be used for training: {details}.",
            hint="upload a file that `tunelab validate` accepts",
        )
    return file


def _create_hosted(store: Store, spec: JobSpec, report: ValidationReport) -> dict:
    provider = get_provider(spec.provider, base_url=spec.base_url)
    request_id = new_id("req")
    metadata = {**spec.metadata, REQUEST_ID_KEY: request_id}
    if spec.base_url:
        metadata["tunelab_base_url"] = spec.base_url
    job = store.create_job(
        provider=spec.provider,
        model=spec.model,
        name=spec.name,
        hyperparameters=spec.hyperparameters,
        suffix=spec.suffix,
        seed=spec.seed,
        metadata=metadata,
        status="validating_files",
        raw_status="validating_files",
    )
    try:
        train = _upload(store, provider, spec.training_file, report)
        val = (
            _upload(store, provider, spec.validation_file, report) if spec.validation_file else None
        )
        hyperparameters = {HOSTED_RENAMES.get(k, k): v for k, v in spec.hyperparameters.items()}
        state = provider.create_job(
            JobRequest(
                model=spec.model,
                training_file=train["provider_file_id"],
                validation_file=val["provider_file_id"] if val else None,
                hyperparameters=hyperparameters,
                suffix=spec.suffix,
                seed=spec.seed,
                metadata={k: str(v) for k, v in metadata.items()},
            )
        )
    except TunelabError as err:
        store.update_job(job["id"], status="failed", raw_status="not_created",
                         error_code=err.code, error_message=err.message,
                         finished_at=int(time.time()))  # fmt: skip
        raise
    store.update_job(
        job["id"],
        provider_job_id=state.id,
        training_file=train["id"],
        validation_file=val["id"] if val else None,
    )
    return _apply_state(store, store.get_job(job["id"]), state)


def _upload(store: Store, provider: Provider, path: Path, report: ValidationReport) -> dict:
    """The registry's record of `path` on the provider: uploaded once per distinct content."""
    checksum = local.file_checksum(path)
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


# -- reading and syncing --------------------------------------------------------------------


def get_job(job_id: str) -> dict:
    """The job, synced from its provider first when it is hosted and not finished."""
    with Store() as store:
        return refresh(store, store.get_job(job_id))


def list_jobs(
    *, limit: int = 20, after: str | None = None, provider: str | None = None
) -> list[dict]:
    from tunelab.providers.worker import recover_lost_jobs

    with Store() as store:
        recover_lost_jobs(store)  # once for the page, not once per running local job
        jobs = store.list_jobs(limit=limit, after=after, provider=provider)
        return [job if job["provider"] == "local" else refresh(store, job, events=False)
                for job in jobs]  # fmt: skip


def refresh(store: Store, job: dict, *, events: bool = True) -> dict:
    """Bring a job up to date: lost local workers detected, hosted jobs synced."""
    if job["provider"] == "local":
        if job["status"] == "running":
            from tunelab.providers.worker import recover_lost_jobs

            recover_lost_jobs(store)
            return store.get_job(job["id"])
        return job
    if job["status"] in TERMINAL_STATUSES and job.get("fine_tuned_model") is not None:
        return job
    if not job["provider_job_id"]:
        return job  # never reached its provider (see error_message)
    provider = _provider_of(job)
    job = _apply_state(store, job, provider.retrieve_job(job["provider_job_id"]))
    if events:
        sync_events(store, job, provider)
    return job


def _provider_of(job: dict) -> Provider:
    return get_provider(job["provider"], base_url=job["metadata"].get("tunelab_base_url"))


def _apply_state(store: Store, job: dict, state: JobState) -> dict:
    job = store.update_job(
        job["id"],
        status=state.status,
        raw_status=state.raw_status,
        fine_tuned_model=state.fine_tuned_model,
        finished_at=state.finished_at,
        trained_tokens=state.trained_tokens,
        estimated_finish=state.estimated_finish,
        error_code=state.error_code,
        error_message=state.error_message,
        resolved_hyperparameters=state.hyperparameters or None,
    )
    if state.status == "succeeded" and state.fine_tuned_model:
        store.put_model(
            state.fine_tuned_model,
            provider=job["provider"],
            kind="fine-tuned",
            base_model=job["model"],
            job_id=job["id"],
            details={"base_url": job["metadata"].get("tunelab_base_url")},
        )
    return job


def sync_events(store: Store, job: dict, provider: Provider | None = None) -> None:
    """Copy a hosted job's events and checkpoints into the registry (each once)."""
    if job["provider"] == "local" or not job["provider_job_id"]:
        return
    provider = provider or _provider_of(job)
    for event in provider.list_events(job["provider_job_id"]):
        store.add_event(job["id"], event.message, level=event.level, type=event.type,
                        data=event.data, created_at=event.created_at,
                        event_id=f"{job['provider']}:{event.id}")  # fmt: skip
    for point in provider.list_checkpoints(job["provider_job_id"]):
        store.add_checkpoint(job["id"], point.step, created_at=point.created_at,
                             fine_tuned_model_checkpoint=point.fine_tuned_model_checkpoint,
                             metrics=point.metrics, checkpoint_id=point.id)  # fmt: skip


def list_events(job_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[dict]:
    with Store() as store:
        job = refresh(store, store.get_job(job_id))
        return store.list_events(job["id"], after_seq=after_seq, limit=limit)


def list_checkpoints(job_id: str) -> list[dict]:
    with Store() as store:
        job = refresh(store, store.get_job(job_id))
        return store.list_checkpoints(job["id"])


def list_metrics(job_id: str) -> list[dict]:
    with Store() as store:
        return store.list_metrics(store.get_job(job_id)["id"])


# -- changing -------------------------------------------------------------------------------


def cancel_job(job_id: str) -> dict:
    return _stop(job_id, pause=False)


def pause_job(job_id: str) -> dict:
    return _stop(job_id, pause=True)


def _stop(job_id: str, *, pause: bool) -> dict:
    with Store() as store:
        job = refresh(store, store.get_job(job_id))
        if job["status"] in TERMINAL_STATUSES:
            raise TunelabError(
                "job_finished",
                f"job {job['id']} has already {job['status']}.",
                hint=None if pause else "nothing to cancel",
            )
        if job["provider"] == "local":
            return local.request_stop(store, job, pause)
        provider = _provider_of(job)
        call = provider.pause_job if pause else provider.cancel_job
        return _apply_state(store, job, call(job["provider_job_id"]))


def resume_job(job_id: str, *, start_worker: bool = True) -> dict:
    """Continue a paused job, or (local) a failed or cancelled one from its checkpoint."""
    with Store() as store:
        job = refresh(store, store.get_job(job_id))
        if job["provider"] == "local":
            job = local.requeue(store, job)
            if start_worker:
                local.start_worker()
            return job
        return _apply_state(store, job, _provider_of(job).resume_job(job["provider_job_id"]))


def delete_job(job_id: str) -> None:
    """Forget a finished (or never started) job; the model it produced stays."""
    with Store() as store:
        job = refresh(store, store.get_job(job_id))
        if job["status"] in ("running", "validating_files"):
            raise TunelabError(
                "job_active",
                f"job {job['id']} is {job['status']}.",
                hint=f"cancel it first: `tunelab jobs cancel {job['id']}`",
            )
        if job["provider"] == "local" and job["status"] != "succeeded" and job["output_dir"]:
            _remove_tree(Path(job["output_dir"]))  # checkpoints of a job that made no model
        store.delete_job(job["id"])


def _remove_tree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)


def wait_job(
    job_id: str,
    *,
    on_update: Callable[[dict], None] | None = None,
    timeout: float | None = None,
    poll: float = 1.0,
    max_poll: float = 15.0,
) -> dict:
    """Poll until the job is finished (or paused); hosted jobs back off up to `max_poll`."""
    began, delay = time.monotonic(), poll
    while True:
        job = get_job(job_id)
        if on_update is not None:
            on_update(job)
        if job["status"] in TERMINAL_STATUSES or job["status"] == "paused":
            return job
        if timeout is not None and time.monotonic() - began > timeout:
            raise TunelabError(
                "wait_timeout",
                f"job {job['id']} is still {job['status']} after {timeout:.0f} s.",
                hint=f"`tunelab jobs wait {job['id']}` waits again",
            )
        time.sleep(delay)
        if job["provider"] != "local":
            delay = min(max_poll, delay * 1.5)


# -- OpenAI's shape -------------------------------------------------------------------------


def job_object(job: dict) -> dict:
    """A registry job as OpenAI's `fine_tuning.job` object (plus a `tunelab` section)."""
    given = job["hyperparameters"] or {}
    resolved = job["resolved_hyperparameters"] or {}
    hyperparameters = {
        name: resolved.get(name, given.get(name, "auto"))
        for name in ("n_epochs", "batch_size", "learning_rate_multiplier")
    }
    error = None
    if job["error_code"] or job["error_message"]:
        error = {"code": job["error_code"], "message": job["error_message"], "param": None}
    metadata = {k: v for k, v in (job["metadata"] or {}).items() if not k.startswith("tunelab_")}
    return {
        "object": "fine_tuning.job",
        "id": job["id"],
        "model": job["model"],
        "created_at": job["created_at"],
        "finished_at": job["finished_at"],
        "fine_tuned_model": job["fine_tuned_model"],
        "organization_id": local.ORG if job["provider"] == "local" else None,
        "result_files": [],
        "status": job["status"],
        "validation_file": job["validation_file"],
        "training_file": job["training_file"],
        "hyperparameters": hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "trained_tokens": job["trained_tokens"],
        "error": error,
        "seed": job["seed"],
        "estimated_finish": job["estimated_finish"],
        "suffix": job["suffix"],
        "metadata": metadata or None,
        "integrations": [],
        "tunelab": {
            "provider": job["provider"],
            "provider_job_id": job["provider_job_id"],
            "raw_status": job["raw_status"],
            "name": job["name"],
            "progress": job["progress"],
            "output_dir": job["output_dir"],
            "hyperparameters_given": given,
        },
    }
