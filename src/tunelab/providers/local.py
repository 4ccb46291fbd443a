"""The local provider: jobs queued in the registry and run by `tunelab worker` on this machine.

Training files are copied into `$TUNELAB_HOME/files` (named by checksum), so a job can be
resumed even after the user edits or deletes the file it was created from. Job outputs live
in `$TUNELAB_HOME/jobs/<job id>`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.io import file_sha256
from tunelab.registry import Store
from tunelab.settings import get_settings

ORG = "local"  # the org part of local `ft:` names: ft:<base>:local:<suffix>:<id>
CANCEL, PAUSE = 1, 2


file_checksum = file_sha256


def register_file(store: Store, path: Path, validation: dict | None) -> dict:
    """The registry's record of a local copy of `path` (reused when the bytes are known)."""
    checksum = file_checksum(path)
    known = store.find_file("local", checksum, "fine-tune")
    if known is not None and known["path"] and Path(known["path"]).exists():
        return known
    return store.add_file(
        provider="local",
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
    files_dir = get_settings().home / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    target = files_dir / f"{checksum[:24]}.jsonl"
    if target.exists():
        if move:
            path.unlink()
        return target
    if move:
        os.replace(path, target)
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(path, staging)
    os.replace(staging, target)
    return target


def store_upload(store: Store, staged: Path, filename: str, purpose: str) -> dict:
    """Validate an uploaded file (staged inside TUNELAB_HOME) and record it.

    A file with errors is recorded too, with status "error" and the first findings in
    `status_details`, as OpenAI does.
    """
    from tunelab.data.validate import validate_file

    report = validate_file(staged)
    summary = report.to_dict()
    details = None
    if not report.ok:
        first = [f"line {f['line']}: {f['message']}" if f.get("line") else f["message"]
                 for f in summary["findings"] if f["severity"] == "error"][:3]  # fmt: skip
        details = f"{report.n_errors} error(s): " + "; ".join(first)
    checksum = file_checksum(staged)
    size = staged.stat().st_size
    return store.add_file(
        provider="local",
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


def queue_job(
    store: Store,
    *,
    model: str,
    base_path: str | None,
    training_file: dict,
    validation_file: dict | None,
    hyperparameters: dict,
    suffix: str | None,
    name: str | None,
    seed: int | None,
    metadata: dict,
) -> dict:
    """Insert a queued local job; the worker picks it up."""
    job = store.create_job(
        provider="local",
        model=model,
        name=name,
        training_file=training_file["id"],
        validation_file=validation_file["id"] if validation_file else None,
        hyperparameters=hyperparameters,
        method="supervised",
        suffix=suffix,
        seed=seed,
        metadata=metadata,
        status="queued",
        raw_status="queued",
    )
    output_dir = get_settings().home / "jobs" / job["id"]
    extra = {"tunelab_model_name": model_name(model, suffix, job["id"])}
    if base_path:
        extra["tunelab_base_path"] = base_path
    job = store.update_job(job["id"], output_dir=str(output_dir), metadata={**metadata, **extra})
    store.add_event(job["id"], f"Created fine-tuning job: {job['id']}")
    return job


def request_stop(store: Store, job: dict, pause: bool) -> dict:
    """Cancel (or pause) a local job: at once when queued, after its current step when running."""
    word = "pause" if pause else "cancel"
    final = "paused" if pause else "cancelled"
    if job["status"] in ("queued", "paused") and not (pause and job["status"] == "paused"):
        changed = store.update_job(
            job["id"],
            expect=(job["status"],),
            status=final,
            raw_status=final,
            finished_at=None if pause else int(time.time()),
        )
        if changed is not None:
            store.add_event(job["id"], f"Job {final}")
            return changed
        job = store.get_job(job["id"])  # it moved meanwhile: act on what it is now
    if job["status"] == "running":
        store.update_job(job["id"], cancel_requested=PAUSE if pause else CANCEL)
        store.add_event(job["id"], f"Requested to {word}; stopping after the current step")
        return store.get_job(job["id"])
    raise TunelabError(
        "job_not_running",
        f"job {job['id']} is {job['status']}; only a queued or running job can be {final}.",
        exit_code=1,
    )


def requeue(store: Store, job: dict) -> dict:
    """Queue a paused, failed or cancelled local job again; it resumes from its checkpoint."""
    if job["status"] not in ("paused", "failed", "cancelled"):
        raise TunelabError(
            "job_not_resumable",
            f"job {job['id']} is {job['status']}; only a paused, failed or cancelled job resumes.",
        )
    changed = store.update_job(
        job["id"],
        expect=(job["status"],),
        status="queued",
        raw_status="queued",
        cancel_requested=0,
        error_code=None,
        error_message=None,
        finished_at=None,
    )
    if changed is None:
        raise TunelabError("job_changed", f"job {job['id']} changed meanwhile; try again.")
    store.add_event(job["id"], "Job resumed; continuing from its last checkpoint")
    return changed


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
