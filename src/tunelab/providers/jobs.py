"""Fine-tuning jobs on every provider, recorded in the registry: the API the CLI and server use.

Each job belongs to one provider, and that provider decides how its jobs start, stay current,
stop and resume (`Provider.start_job`, `refresh_job`, ...): hosted jobs are synced from their
service whenever they are read and not yet finished; the local provider's live in the
registry, where the worker writes their progress.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.catalog import DEFAULT_MODEL
from tunelab.data.analyze import FileAnalysis
from tunelab.data.method_scan import require_valid
from tunelab.data.reinforcement import grader_item_fields
from tunelab.data.validate import ValidationReport
from tunelab.engine.config import PERIODIC_EVAL_EXAMPLES, TrainConfig
from tunelab.errors import TunelabError, usage_error
from tunelab.providers.base import TERMINAL_STATUSES
from tunelab.providers.local import jobs as local
from tunelab.providers.local.artifacts import training_path
from tunelab.providers.methods import method_of
from tunelab.providers.provider import FINE_TUNING, Provider
from tunelab.providers.registry import (
    DEFAULT_PROVIDER,
    check_provider,
    provider_class,
    provider_classes,
    provider_names,
)
from tunelab.registry import Checkpoint, Event, Job
from tunelab.throughput import estimate_seconds

if TYPE_CHECKING:
    from tunelab.registry import Store

PROVIDERS = tuple(provider_names(FINE_TUNING))  # every provider that trains, plugins included
# OpenAI's limits, applied to every provider's jobs: a script that works here works there.
MAX_SUFFIX = 64
MAX_METADATA_KEYS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
# The suffix becomes one field of a `ft:base:org:suffix:id` name: no colon, no spaces.
SUFFIX_CHARACTERS = re.compile(r"[A-Za-z0-9._-]*")


@dataclass
class JobSpec:
    """What a user asks for. `hyperparameters` holds only the settings they gave."""

    training_file: Path
    validation_file: Path | None = None
    model: str = DEFAULT_MODEL
    provider: str = DEFAULT_PROVIDER
    hyperparameters: dict = field(default_factory=dict)
    suffix: str | None = None
    name: str | None = None
    seed: int | None = None
    metadata: dict = field(default_factory=dict)
    base_url: str | None = None
    key_variable: str | None = None  # the variable holding the key for `base_url`
    nproc_per_node: int = 1  # processes training a job on this machine (torchrun when > 1)
    # A reinforcement job's grader (OpenAI's definition; the front end has checked it).
    grader: dict | None = None

    def __post_init__(self) -> None:
        check_suffix(self.suffix)
        check_metadata(self.metadata)
        check_grader_given(method_of(self.hyperparameters), self.grader)


def check_grader_given(method: str, grader: dict | None) -> None:
    """A reinforcement job needs a grader, and only it takes one."""
    if method == "reinforcement" and grader is None:
        raise usage_error(
            "grader_missing",
            "a reinforcement job needs a grader to score the answers.",
            hint="pass --grader GRADER.json (API: method.reinforcement.grader)",
        )
    if method != "reinforcement" and grader is not None:
        raise usage_error("grader_unused", "a grader scores the answers of reinforcement jobs.")


def check_suffix(suffix: str | None) -> None:
    """Refuse a suffix OpenAI would refuse, or one that would break the `ft:` name."""
    if suffix is None:
        return
    if len(suffix) > MAX_SUFFIX:
        raise _invalid(
            "invalid_suffix",
            f"the suffix is {len(suffix)} characters long; at most {MAX_SUFFIX} are allowed.",
            "suffix",
        )
    if not SUFFIX_CHARACTERS.fullmatch(suffix):
        raise _invalid(
            "invalid_suffix",
            f"the suffix {suffix!r} may hold only letters, digits, '-', '_' and '.'.",
            "suffix",
        )


def check_metadata(metadata: dict) -> None:
    """OpenAI's metadata rules: at most 16 pairs, string keys (64) and values (512)."""
    if len(metadata) > MAX_METADATA_KEYS:
        raise _invalid(
            "invalid_metadata",
            f"metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed.",
            "metadata",
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise _invalid(
                "invalid_metadata",
                f"metadata {key!r}: keys and values must be strings.",
                "metadata",
            )
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise _invalid(
                "invalid_metadata",
                f"metadata {key[:MAX_METADATA_KEY]!r}: keys hold "
                f"at most {MAX_METADATA_KEY} characters and values "
                f"{MAX_METADATA_VALUE}.",
                "metadata",
            )


def _invalid(code: str, message: str, field_name: str) -> TunelabError:
    return usage_error(code, message, hint=f"shorten or change the job's {field_name}")


# -- creating -------------------------------------------------------------------------------


def validate_job_files(spec: JobSpec, progress=None) -> ValidationReport:
    """Validate the files for the base model; raise `invalid_training_data` on errors."""
    return require_valid(
        spec.training_file,
        method=method_of(spec.hyperparameters),
        val_path=spec.validation_file,
        grader_fields=grader_item_fields(spec.grader) if spec.grader else (),
        model=provider_class(spec.provider).training_model_spec(spec.model),
        progress=progress,
        refused="no job was created",
    )


def create_job(spec: JobSpec, *, start_worker: bool = True, report=None) -> Job:
    """Validate the files, record the job and hand it to its provider; returns the job.

    `start_worker=False` leaves a local job queued for `tunelab worker`.
    """
    if spec.nproc_per_node > 1 and not provider_class(spec.provider).runs_here:
        raise usage_error(
            "nproc_not_supported",
            f"--nproc-per-node is for jobs trained on this machine, not on {spec.provider}.",
            hint="the provider chooses its own hardware; leave --nproc-per-node out",
        )
    check_provider(spec.provider)
    report = report or validate_job_files(spec)
    with job_registry.Store() as store:
        return provider_class(spec.provider).start_job(store, spec, report, start=start_worker)


def create_job_from_files(
    *,
    model: str,
    training_file: str,
    validation_file: str | None = None,
    hyperparameters: dict | None = None,
    suffix: str | None = None,
    seed: int | None = None,
    metadata: dict | None = None,
    start_worker: bool = True,
    grader: dict | None = None,
) -> Job:
    """A job on this machine on files already in the registry (`POST /fine_tuning/jobs`).

    The files were checked when uploaded; here they are validated again for `model` (its
    tokenizer and context), as `create_job` does, before anything is queued.
    """

    with job_registry.Store() as store:
        train = local.usable_file(store, training_file, "training_file")
        val = (
            local.usable_file(store, validation_file, "validation_file")
            if validation_file
            else None
        )
    spec = JobSpec(
        training_path(train),
        validation_file=training_path(val) if val else None,
        model=model,
        hyperparameters=dict(hyperparameters or {}),
        suffix=suffix,
        seed=seed,
        metadata=metadata or {},
        grader=grader,
    )
    try:
        validate_job_files(spec)
    except TunelabError as err:  # the hint names the file as the client knows it
        err.hint = f"run `tunelab validate` on {training_file} for every finding"
        raise
    with job_registry.Store() as store:
        return local.queue_on_files(store, spec, train, val, start=start_worker)


def import_job(
    provider: str, job_id: str, *, base_url: str | None = None, key_variable: str | None = None
) -> Job:
    """Track a job started elsewhere (the provider's web console, another tool)."""
    with job_registry.Store() as store:
        return provider_class(provider).import_job(
            store, job_id, base_url=base_url, key_variable=key_variable
        )


# -- reading and syncing --------------------------------------------------------------------


def get_job(job_id: str) -> Job:
    """The job, brought up to date by its provider first."""
    with job_registry.Store() as store:
        return refresh(store, store.get_job(job_id))


def list_jobs(
    *, limit: int = 20, after: str | None = None, provider: str | None = None
) -> list[Job]:
    """A page of jobs, each brought up to date by its provider (without their events)."""
    with job_registry.Store() as store:
        jobs = store.list_jobs(limit=limit, after=after, provider=provider)
        fresh: dict[str, Job] = {}
        for name in dict.fromkeys(job.provider for job in jobs):
            mine = [job for job in jobs if job.provider == name]
            cls = provider_classes().get(name)  # a plugin since uninstalled: as recorded
            for job in cls.refresh_page(store, mine) if cls else mine:
                fresh[job.id] = job
        return [fresh[job.id] for job in jobs]


def refresh(store: Store, job: Job, *, events: bool = True) -> Job:
    """Bring a job up to date: lost local workers detected, hosted jobs synced."""
    return _provider_class_of(job).refresh_job(store, job, events=events)


def _provider_class_of(job: Job) -> type[Provider]:
    return provider_class(job.provider)


def list_events(job_id: str, *, after_seq: int = 0, limit: int = 1000) -> list[Event]:
    with job_registry.Store() as store:
        job = refresh(store, store.get_job(job_id))
        return store.list_events(job.id, after_seq=after_seq, limit=limit)


def list_checkpoints(job_id: str) -> list[Checkpoint]:
    """The job's checkpoints, newest first, each where this machine reaches it."""
    with job_registry.Store() as store:
        job = refresh(store, store.get_job(job_id))
        points = store.list_checkpoints(job.id)
    return _provider_class_of(job).checkpoints_here(job, points)


def list_metrics(job_id: str) -> list[dict]:
    with job_registry.Store() as store:
        return store.list_metrics(store.get_job(job_id).id)


# -- changing -------------------------------------------------------------------------------


def cancel_job(job_id: str) -> Job:
    return _stop(job_id, pause=False)


def pause_job(job_id: str) -> Job:
    return _stop(job_id, pause=True)


def _stop(job_id: str, *, pause: bool) -> Job:
    with job_registry.Store() as store:
        job = refresh(store, store.get_job(job_id))
        if job.status in TERMINAL_STATUSES:
            raise TunelabError(
                "job_finished",
                f"job {job.id} has already {job.status}.",
                hint=None if pause else "nothing to cancel",
            )
        return _provider_class_of(job).stop_job(store, job, pause=pause)


def resume_job(job_id: str, *, start_worker: bool = True) -> Job:
    """Continue a paused job, or (local) a failed or cancelled one from its checkpoint."""
    with job_registry.Store() as store:
        job = refresh(store, store.get_job(job_id))
        return _provider_class_of(job).restart_job(store, job, start=start_worker)


def delete_job(job_id: str) -> None:
    """Forget a finished (or never started) job; the model it produced stays."""
    with job_registry.Store() as store:
        job = refresh(store, store.get_job(job_id))
        if job.status in ("running", "validating_files"):
            raise TunelabError(
                "job_active",
                f"job {job.id} is {job.status}.",
                hint=f"cancel it first: `tunelab jobs cancel {job.id}`",
            )
        _provider_class_of(job).discard_job(store, job)
        store.delete_job(job.id)


def wait_job(
    job_id: str,
    *,
    on_update: Callable[[Job], None] | None = None,
    timeout: float | None = None,
    poll: float = 1.0,
    max_poll: float = 15.0,
) -> Job:
    """Poll until the job is finished (or paused); hosted jobs back off up to `max_poll`."""
    began, delay = time.monotonic(), poll
    while True:
        job = get_job(job_id)
        if on_update is not None:
            on_update(job)
        if job.status in TERMINAL_STATUSES or job.status == "paused":
            return job
        if timeout is not None and time.monotonic() - began > timeout:
            raise TunelabError(
                "wait_timeout",
                f"job {job.id} is still {job.status} after {timeout:.0f} s.",
                hint=f"`tunelab jobs wait {job.id}` waits again",
            )
        time.sleep(delay)
        if _provider_class_of(job).poll_backs_off:
            delay = min(max_poll, delay * 1.5)


def runs_here(job: Job) -> bool:
    """Whether `job` runs on this machine (by `tunelab worker`)."""
    return _provider_class_of(job).runs_here


def poll_seconds(job: Job) -> float:
    """How long a follower waits between looks at `job`."""
    return _provider_class_of(job).poll_seconds


def queue_note(job: Job) -> str | None:
    """Why a queued job is not running yet (jobs that run here wait for those ahead)."""
    if job.status != "queued":
        return None
    with job_registry.Store() as store:
        return _provider_class_of(job).queue_note(store, job)


# -- what the job trains with -----------------------------------------------------------


def shown_hyperparameters(job: Job) -> dict:
    """OpenAI's three hyperparameters: as the provider resolved them, else as given, else "auto"."""
    given = job.hyperparameters or {}
    resolved = job.resolved_hyperparameters or {}
    return {
        name: resolved.get(name, given.get(name, "auto"))
        for name in ("n_epochs", "batch_size", "learning_rate_multiplier")
    }


def organization_of(job: Job) -> str | None:
    """The org part of the provider's `ft:` names (OpenAI's `organization_id`)."""
    cls = provider_classes().get(job.provider)
    return cls.organization if cls else None


@dataclass(frozen=True)
class JobEstimate:
    """What a job would cost or take: `total_steps` for local jobs; None when unknown."""

    n_epochs: float
    total_steps: int | None = None
    cost_usd: float | None = None
    seconds: float | None = None


def estimate_job(spec: JobSpec, analysis: FileAnalysis) -> JobEstimate:
    """What a job would cost (hosted, at list price) or take here (local, at the throughput
    measured for the base model and method), from `analyze_file`'s `analysis` of its files.
    """

    config = TrainConfig.from_settings(spec.hyperparameters)
    n_epochs = spec.hyperparameters.get("n_epochs", analysis.n_epochs)
    cost = analysis.estimated_cost_usd
    hosted = JobEstimate(n_epochs, cost_usd=cost * n_epochs / analysis.n_epochs if cost else cost)
    n = analysis.n_examples
    if not provider_class(spec.provider).runs_here or not n:
        return hosted
    steps_per_epoch, total_steps = config.step_counts(n)
    # Whole tokens, as the trainer counts them for its own estimate.
    train_tokens = round(analysis.total_tokens * total_steps / steps_per_epoch)
    val = analysis.val
    eval_tokens = 0
    if val is not None and val.n_examples:
        every = config.eval_interval(total_steps, n, val.n_examples)
        periodic = (total_steps - 1) // every
        share = min(1.0, PERIODIC_EVAL_EXAMPLES / val.n_examples)
        eval_tokens = round(val.total_tokens * (1 + periodic * share))
    estimate = estimate_seconds(analysis.model, config.method, train_tokens, eval_tokens)
    return dataclasses.replace(
        hosted,
        n_epochs=min(n_epochs, total_steps / steps_per_epoch),
        total_steps=total_steps,
        seconds=estimate[0] if estimate is not None else None,
    )
