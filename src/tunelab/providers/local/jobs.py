"""The local provider: jobs queued in the registry and run by `tunelab worker` on this machine.

Training files are copied into `$TUNELAB_HOME/files` (named by checksum), so a job can be
resumed even after the user edits or deletes the file it was created from. Job outputs live
in `$TUNELAB_HOME/jobs/<job id>`. With `TUNELAB_ARTIFACTS` set, both also go to the artefact
store, for workers and users on other machines (`local_artifacts`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.catalog import DEFAULT_MODEL, has_tokenizer, local_model_spec, resolve_model
from tunelab.data.method_scan import validate_data_file
from tunelab.engine import TrainConfig
from tunelab.engine.sources import resolve_model_source
from tunelab.errors import TunelabError, usage_error
from tunelab.io import file_sha256
from tunelab.providers.local import artifacts as local_artifacts
from tunelab.providers.local.artifacts import JOB_LOG as JOB_LOG  # `jobs show` names it
from tunelab.providers.local.artifacts import JobWorkspace
from tunelab.providers.local.lost import recover_lost_jobs
from tunelab.providers.methods import GRADER_KEY, method_of
from tunelab.providers.registry import runs_here
from tunelab.registry import File, Job, Model
from tunelab.settings import get_settings, writable_home
from tunelab.types import LOCAL_PROVIDER

if TYPE_CHECKING:
    from tunelab.registry import Store

PROVIDER = LOCAL_PROVIDER  # the registry's name for this machine's jobs, files and models
ORG = PROVIDER  # the org part of local `ft:` names: ft:<base>:local:<suffix>:<id>
CANCEL, PAUSE = 1, 2
NPROC_KEY = "tunelab_nproc_per_node"  # in a job's metadata: processes training it (torchrun)


file_checksum = file_sha256


def register_file(store: Store, path: Path, validation: dict | None) -> File:
    """The registry's record of a local copy of `path` (reused when the bytes are known)."""
    checksum = file_checksum(path)
    known = store.find_file(PROVIDER, checksum, "fine-tune")
    if known is not None and known.path and Path(known.path).exists():
        local_artifacts.share_file(Path(known.path))  # kept before the store was set, maybe
        return known
    return store.add_file(
        provider=PROVIDER,
        filename=path.name,
        purpose="fine-tune",
        bytes=path.stat().st_size,
        checksum=checksum,
        status="processed",
        path=str(keep_copy(path, checksum)),
        validation=validation,
    )


def keep_copy(path: Path, checksum: str, *, move: bool = False) -> Path:
    """`path`'s bytes in `$TUNELAB_HOME/files`, named by checksum (written atomically)."""
    files_dir = writable_home("keep a copy of the training files") / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    target = files_dir / local_artifacts.file_name(checksum)
    if target.exists():
        if move:
            path.unlink()
    elif move:
        os.replace(path, target)
    else:
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, staging)
        os.replace(staging, target)
    local_artifacts.share_file(target)
    return target


def store_upload(store: Store, staged: Path, filename: str, purpose: str) -> File:
    """Validate an uploaded file (staged inside TUNELAB_HOME) in the format it is in
    (supervised, preference or reinforcement) and record it.

    A file with errors is recorded too, with status "error" and the first findings in
    `status_details`, as OpenAI does.
    """

    report = validate_data_file(staged)  # a file of any training method, detected
    summary = report.to_dict()
    details = None
    if not report.ok:
        first = [
            f"line {f['line']}: {f['message']}" if f.get("line") else f["message"]
            for f in summary["findings"]
            if f["severity"] == "error"
        ][:3]
        details = f"{report.n_errors} error(s): " + "; ".join(first)
    checksum = file_checksum(staged)
    size = staged.stat().st_size
    return store.add_file(
        provider=PROVIDER,
        filename=filename,
        purpose=purpose,
        bytes=size,
        checksum=checksum,
        status="processed" if report.ok else "error",
        path=str(keep_copy(staged, checksum, move=True)),
        validation={**summary, "status_details": details},
    )


def model_name(base: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's form for fine-tuned model names: ft:<base>:<org>:<suffix>:<id>."""
    short_base = base.rstrip("/").split("/")[-1].split(":")[0]
    return f"ft:{short_base}:{ORG}:{suffix or ''}:{job_id.split('-', 1)[1][:8]}"


def local_base(model: str):
    """What a local `--model` names: a registry `ft:` model resolves to its directory."""

    if model.startswith("ft:"):
        known = store_model(model)
        if known is None or not runs_here(known.provider):
            raise usage_error(
                "model_not_found",
                f"no local model {model} in the registry.",
                hint="`tunelab models list` shows the models tunelab knows",
            )
        return resolve_model_source(local_artifacts.model_dir(known))
    return resolve_model_source(model)


def store_model(name: str) -> Model | None:
    with job_registry.Store() as store:
        return store.find_model(name)


def training_model_spec(model: str):
    """The `ModelSpec` whose tokenizer checks training files for a local job on `model`."""
    return model_spec_of(local_base(model))


def model_spec_of(info):
    """The `ModelSpec` of a resolved local model (`ModelInfo`): its tokenizer, if it has one."""

    if info.kind == "bundled":
        return resolve_model(DEFAULT_MODEL)
    return local_model_spec(info.path) if has_tokenizer(info.path) else None


def create_job(store: Store, spec, report, *, start: bool) -> Job:
    """A local job on the files a `JobSpec` names, copied into TUNELAB_HOME."""
    summary = report.to_dict()
    train = register_file(store, spec.training_file, summary)
    val = register_file(store, spec.validation_file, summary) if spec.validation_file else None
    return queue_on_files(store, spec, train, val, start=start)


def usable_file(store: Store, file_id: str, role: str) -> File:
    file = store.get_file(file_id)
    if not runs_here(file.provider) or file.status != "processed":
        details = (file.validation or {}).get("status_details") or file.status
        raise TunelabError(
            "invalid_file",
            f"{role} {file_id} cannot be used for training: {details}.",
            hint="upload a file that `tunelab validate` accepts",
        )
    return file


def queue_on_files(store: Store, spec, train: File, val: File | None, *, start: bool) -> Job:
    """Check the settings, queue the job on registered files, and start a worker."""

    hyperparameters = dict(spec.hyperparameters)
    if spec.seed is not None:
        hyperparameters["seed"] = spec.seed
    config = TrainConfig.from_settings(hyperparameters)  # refuse bad settings before queueing
    if config.training_method == "reinforcement" and spec.nproc_per_node > 1:
        raise usage_error(
            "nproc_not_supported",
            "reinforcement jobs train in one process (their ranks would each need the grader).",
            hint="leave --nproc-per-node out, or run `tunelab train --nproc-per-node N`",
        )
    job = queue_job(store, spec, train, val, hyperparameters)
    if start:
        start_worker()
    return job


def queue_job(store: Store, spec, train: File, val: File | None, hyperparameters: dict) -> Job:
    """Insert a queued local job for `spec` (a `JobSpec`) on registered files, with its
    checked settings; the worker picks it up."""
    info = local_base(spec.model)
    tuned = spec.model.startswith("ft:")
    model = spec.model if tuned else info.name
    base_path = str(info.path) if tuned or info.kind != "bundled" else None
    job = store.create_job(
        provider=PROVIDER,
        model=model,
        name=spec.name,
        training_file=train.id,
        validation_file=val.id if val else None,
        hyperparameters=hyperparameters,
        method=method_of(hyperparameters),
        suffix=spec.suffix,
        seed=spec.seed,
        metadata=spec.metadata,
        status="queued",
        raw_status="queued",
    )
    output_dir = local_artifacts.output_location(job.id)
    extra: dict[str, object] = {"tunelab_model_name": model_name(model, spec.suffix, job.id)}
    if base_path:
        extra["tunelab_base_path"] = base_path
    if spec.nproc_per_node > 1:
        extra[NPROC_KEY] = spec.nproc_per_node
    if spec.grader is not None:
        extra[GRADER_KEY] = json.dumps(spec.grader)
    queued = store.update_job(job.id, output_dir=output_dir, metadata={**spec.metadata, **extra})
    assert queued is not None  # no `expect`: the write always lands
    store.add_event(queued.id, f"Created fine-tuning job: {queued.id}")
    return queued


def queue_note(store: Store, job: Job) -> str | None:
    """Why a queued local job is not running yet: the jobs ahead of it, the running first.

    Auto-started workers run local jobs one at a time (two trainings on the same cores
    would each run at half speed at best), so a job waits for those created before it.
    """
    active = store.list_jobs(provider=LOCAL_PROVIDER, statuses=("running", "queued"), limit=10_000)
    running = [j for j in active if j.status == "running"]
    # Newest first: the jobs listed after this one were created before it.
    ids = [j.id for j in active]
    older = active[ids.index(job.id) + 1 :] if job.id in ids else []
    ahead = [j for j in older if j.status == "queued"]
    if not running and not ahead:
        return "waiting for a worker to pick it up"
    parts = []
    for other in reversed(running):
        progress = other.progress or {}
        step = f", step {progress['step']}/{progress['total_steps']}" if progress else ""
        parts.append(f"{other.id} (running{step})")
    if ahead:
        parts.append(f"{len(ahead)} queued job(s) created before it")
    return "queued behind " + " and ".join(parts)


def request_stop(store: Store, job: Job, pause: bool) -> Job:
    """Cancel (or pause) a local job: at once when queued, after its current step when running."""
    word = "pause" if pause else "cancel"
    final = "paused" if pause else "cancelled"
    if job.status in ("queued", "paused") and not (pause and job.status == "paused"):
        changed = store.update_job(
            job.id,
            expect=(job.status,),
            status=final,
            raw_status=final,
            finished_at=None if pause else int(time.time()),
        )
        if changed is not None:
            store.add_event(job.id, f"Job {final}")
            return changed
        job = store.get_job(job.id)  # it moved meanwhile: act on what it is now
    if job.status == "running":
        store.update_job(job.id, cancel_requested=PAUSE if pause else CANCEL)
        store.add_event(job.id, f"Requested to {word}; stopping after the current step")
        return store.get_job(job.id)
    raise TunelabError(
        "job_not_running",
        f"job {job.id} is {job.status}; only a queued or running job can be {final}.",
        exit_code=1,
    )


def requeue(store: Store, job: Job) -> Job:
    """Queue a paused, failed or cancelled local job again; it resumes from its checkpoint."""
    if job.status not in ("paused", "failed", "cancelled"):
        raise TunelabError(
            "job_not_resumable",
            f"job {job.id} is {job.status}; only a paused, failed or cancelled job resumes.",
        )
    changed = store.update_job(
        job.id,
        expect=(job.status,),
        status="queued",
        raw_status="queued",
        cancel_requested=0,
        error_code=None,
        error_message=None,
        finished_at=None,
    )
    if changed is None:
        raise TunelabError("job_changed", f"job {job.id} changed meanwhile; try again.")
    store.add_event(job.id, "Job resumed; continuing from its last checkpoint")
    return changed


def refresh_page(store: Store, jobs: list[Job]) -> list[Job]:
    """Local jobs of a listing: lost workers found once for the page, not once per job."""
    if not any(job.status == "running" for job in jobs):
        return jobs
    recover_lost_jobs(store)
    return [store.get_job(job.id) for job in jobs]


def refresh(store: Store, job: Job) -> Job:
    """A running local job whose worker died is marked failed."""
    return refresh_page(store, [job])[0]


def discard(job: Job) -> None:
    """Remove the checkpoints of a job that made no model (here and in the artefact store)."""
    if job.status != "succeeded" and job.output_dir:
        JobWorkspace.of(job).forget()


def start_worker() -> int:
    """Start a background worker that runs queued jobs and exits when there are none.

    Its output goes to `$TUNELAB_HOME/logs/worker.log`. Returns its pid.
    """
    logs = get_settings().home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "worker.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tunelab", "worker", "--auto"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the command; Ctrl-C in the shell spares it
            env=os.environ.copy(),
        )
    return process.pid
