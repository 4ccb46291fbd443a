"""`tunelab migrate openai inventory`: every fine-tuning job of the account, in the registry.

All pages of the account's jobs are listed; each is recorded as an imported OpenAI job
(`tunelab.providers.jobs.import_job`'s recording, so `jobs list/wait` and the UI see it),
with its events and checkpoints; its training and validation files are downloaded under
`$TUNELAB_HOME/migrate/openai/files/` and registered with their SHA-256. Running it again
adds only what is new. A file OpenAI has deleted is reported and the rest goes on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io import file_sha256
from tunelab.migrate.dates import MODELS_STOP, NO_NEW_JOBS, countdown, utc_today
from tunelab.providers.hosted import jobs as hosted_jobs
from tunelab.providers.registry import get_provider
from tunelab.providers.wire import job_grader
from tunelab.registry import File, Job, Store
from tunelab.settings import get_settings

PROVIDER = "openai"
DOWNLOADED = "downloaded"  # a file status: a provider's file copied here by the inventory
MIGRATED_FROM_KEY = "tunelab_migrated_from"  # job metadata: the ft: model a job replaces


@dataclass
class Inventory:
    """What `inventory` found: one row per job, and what this run added."""

    # In the order `--json` prints them: the countdown first, the rows last.
    countdown: dict = field(default_factory=dict)
    new_jobs: int = 0
    new_files: int = 0
    deleted_files: list[dict] = field(default_factory=list)  # {file, jobs, message}
    jobs: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def migrate_dir() -> Path:
    return get_settings().home / "migrate" / PROVIDER


def take_inventory(
    *, base_url: str | None = None, today: date | None = None, provider=None
) -> Inventory:
    """List every job of the account and record jobs, files and checkpoints (see module)."""
    today = today or utc_today()
    provider = provider or get_provider(PROVIDER, base_url=base_url)
    states = _list_every_job(provider, today)
    result = Inventory(countdown=countdown(today))
    gone: dict[str, dict] = {}
    with Store() as store:
        for state in sorted(states, key=lambda s: s.created_at or 0):
            job, new = hosted_jobs.import_state(store, provider, state)
            if not new:
                hosted_jobs.sync_events(store, job, provider)  # checkpoints made since
            result.new_jobs += new
            for file_id in filter(None, (state.training_file, state.validation_file)):
                _fetch_file(store, provider, file_id, result, gone, job.id)
            result.jobs.append(job_row(store, job))
    result.deleted_files = list(gone.values())
    return result


def _list_every_job(provider, today: date) -> list:
    """Every page of the account's jobs; after the shutdown a refusal says what still works."""
    try:
        return provider.list_jobs(limit=None)
    except TunelabError as err:
        if today < NO_NEW_JOBS or err.code == "provider_auth_failed":
            raise
        raise TunelabError(
            err.code,
            f"{err.message} (OpenAI's fine-tuning platform has taken no new jobs since "
            f"{NO_NEW_JOBS}; its fine-tuned models stop answering on {MODELS_STOP}).",
            hint="what earlier inventories recorded stays in the registry: "
            "`tunelab migrate openai plan` and `run` still work",
        ) from None


def _fetch_file(
    store: Store, provider, file_id: str, result: Inventory, gone: dict, job_id: str
) -> None:
    """Download and register `file_id` unless it is registered (or known deleted) already."""
    if registered_file(store, file_id) is not None:
        return
    if file_id in gone:
        gone[file_id]["jobs"].append(job_id)
        return
    path = migrate_dir() / "files" / f"{file_id}.jsonl"
    try:
        remote = provider.download_file(file_id, path)
    except TunelabError as err:
        if err.code != "provider_file_gone":
            raise
        gone[file_id] = {"file": file_id, "jobs": [job_id], "message": err.message}
        return
    store.add_file(
        provider=PROVIDER,
        provider_file_id=file_id,
        filename=remote.filename,
        purpose=remote.purpose,
        bytes=path.stat().st_size,
        checksum=file_sha256(path),
        status=DOWNLOADED,
        path=str(path),
    )
    result.new_files += 1


def registered_file(store: Store, file_id: str | None) -> File | None:
    """The registry's downloaded copy of OpenAI's file `file_id`, if there is one."""
    if not file_id:
        return None
    try:
        file = store.get_file(file_id)
    except TunelabError:
        return None
    return file if file.status == DOWNLOADED and file.path else None


def openai_jobs(store: Store) -> list[Job]:
    """Every OpenAI job the registry holds, oldest first (those `inventory` imported too)."""
    jobs = store.list_jobs(limit=1_000_000, provider=PROVIDER)
    return [job for job in reversed(jobs) if MIGRATED_FROM_KEY not in (job.metadata or {})]


def job_row(store: Store, job: Job) -> dict:
    """One job as `inventory` lists it: files, hyperparameters, model, checkpoints."""
    return {
        "id": job.id,
        "openai_job_id": job.provider_job_id,
        "status": job.status,
        "model": job.model,
        "fine_tuned_model": job.fine_tuned_model,
        "hyperparameters": job.resolved_hyperparameters or {},
        "grader": job_grader(job),  # a reinforcement job's, as OpenAI kept it
        "training_file": _file_row(store, job.training_file),
        "validation_file": _file_row(store, job.validation_file),
        "checkpoints": [
            point.fine_tuned_model_checkpoint for point in store.list_checkpoints(job.id)
        ],
    }


def _file_row(store: Store, file_id: str | None) -> dict | None:
    if not file_id:
        return None
    file = registered_file(store, file_id)
    if file is None:
        return {"id": file_id, "path": None, "sha256": None, "bytes": None}
    return {"id": file_id, "path": file.path, "sha256": file.checksum, "bytes": file.bytes}
