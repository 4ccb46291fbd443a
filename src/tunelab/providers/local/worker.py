"""The local worker: claims queued local jobs from the registry and runs the engine on them.

A job is claimed atomically (one immediate transaction moves it from queued to running), so
several workers may run and each job runs once. While it trains, a heartbeat thread stamps
the job every second and picks up cancel and pause requests; the engine's per-step callback
writes metrics, progress, ETA, checkpoints and events into the registry. A worker that dies
leaves a running job with a stale heartbeat and a dead pid: `recover_lost_jobs` (run by every
tunelab command and worker at start) marks it failed, and `tunelab jobs resume` continues it
from its last checkpoint.

With `TUNELAB_ARTIFACTS` set, the worker trains in its own `$TUNELAB_HOME/jobs/<job id>`,
fetching the job's files (and the checkpoints another machine uploaded) first, uploads each
checkpoint in the background when it is saved (`checkpoint_uploads`), and uploads the
directory when the job ends, before the registry says it ended.

Auto-started workers hold `worker.lock`, so `jobs create` runs jobs one after another on this
machine; `tunelab worker` started by hand takes no lock and adds parallelism.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab import artifacts
from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.errors import TunelabError
from tunelab.providers.local import ranks
from tunelab.providers.local.artifacts import JobWorkspace
from tunelab.providers.local.jobs import PAUSE
from tunelab.providers.local.lost import recover_lost_jobs
from tunelab.providers.local.training import (
    RewardFactory,
    forget_missing_checkpoints,
    job_log,
    train_here,
)
from tunelab.registry import Job
from tunelab.settings import get_settings
from tunelab.types import LOCAL_PROVIDER

if TYPE_CHECKING:
    from tunelab.registry import Store

log = logging.getLogger("tunelab.worker")

HEARTBEAT_SECONDS = 1.0


def worker_identity() -> dict:
    return {
        "worker_id": f"worker-{secrets.token_hex(6)}",
        "worker_pid": os.getpid(),
        "worker_host": socket.gethostname(),
    }


def run_worker(
    *,
    exit_when_idle: float | None = None,
    poll_seconds: float = 1.0,
    max_jobs: int | None = None,
    stop: threading.Event | None = None,
    rewards: RewardFactory | None = None,
) -> int:
    """Run queued local jobs until stopped (or idle for `exit_when_idle` seconds);
    `rewards` makes reinforcement jobs' rewards from their graders (without it they fail).

    Returns the number of jobs run.
    """
    identity, stop = worker_identity(), stop or threading.Event()
    done, idle_since = 0, time.monotonic()
    with job_registry.Store() as store:
        recover_lost_jobs(store)
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            job = store.claim_next_job(LOCAL_PROVIDER, identity)
            if job is None:
                if exit_when_idle is not None and time.monotonic() - idle_since > exit_when_idle:
                    break
                stop.wait(poll_seconds)
                continue
            run_job(store, job, identity, rewards)
            done, idle_since = done + 1, time.monotonic()
    return done


@contextlib.contextmanager
def machine_lock() -> Iterator[bool]:
    """The lock of the auto-started worker: True if this process holds it."""
    path = get_settings().home / "worker.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_auto_worker(idle_seconds: float = 5.0, rewards: RewardFactory | None = None) -> int:
    """The worker `jobs create` starts: one per machine, exits when the queue is empty.

    After letting go of the lock it looks at the queue once more, so a job queued while it
    was exiting (whose own worker found the lock taken) is never stranded.
    """
    done = 0
    while True:
        with machine_lock() as held:
            if not held:
                return done
            done += run_worker(exit_when_idle=idle_seconds, rewards=rewards)
        with job_registry.Store() as store:
            if not store.list_jobs(provider=LOCAL_PROVIDER, statuses=("queued",), limit=1):
                return done


def run_job(store: Store, job: Job, identity: dict, rewards: RewardFactory | None = None) -> None:
    """Train one claimed job to its end: succeeded, cancelled, paused or failed."""
    workspace = JobWorkspace.of(job)
    store.add_event(job.id, f"Fine-tuning job started by {identity['worker_id']}")
    control = threading.Event()
    beat = _Heartbeat(store.path, job.id, identity["worker_id"], control)
    beat.start()
    try:
        if _bring_here(store, workspace):
            _run_claimed(store, workspace, identity, control, beat, rewards)
    finally:
        beat.stop()


def _bring_here(store: Store, workspace: JobWorkspace) -> bool:
    """Fetch what the job needs from the artefact store; False (the job failed) if it cannot.

    This comes before the job's log opens in its directory: the fetch may replace it.
    """
    job = workspace.job
    try:
        workspace.bring_here(_files_of(store, job))
    except TunelabError as err:
        log.error("job %s failed: [%s] %s", job.id, err.code, err.message)
        _fail(store, job.id, err.code, err.message + (f" ({err.hint})" if err.hint else ""))
        return False
    forget_missing_checkpoints(store, workspace)
    return True


def _run_claimed(
    store: Store, workspace: JobWorkspace, identity: dict, control, beat, rewards
) -> None:
    job_id = workspace.job.id
    with job_log(workspace):
        log.info("job %s started by %s", job_id, identity["worker_id"])
        try:
            result = _train_job(store, workspace, control, rewards)
            _share_outputs(store, workspace, succeeded=result.status != "cancelled")
        except TunelabError as err:
            log.error("job %s failed: [%s] %s", job_id, err.code, err.message)
            _share_after_failure(workspace)
            _fail(store, job_id, err.code, err.message + (f" ({err.hint})" if err.hint else ""))
        except Exception as err:  # a bug: keep the traceback in the worker's log, fail the job
            log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
            _share_after_failure(workspace)
            _fail(store, job_id, "internal_error", f"{type(err).__name__}: {err}")
        else:
            _finish(store, store.get_job(job_id), result, beat.requested)
            log.info(
                "job %s ended: %s at step %d/%d",
                job_id,
                result.status,
                result.step,
                result.total_steps,
            )


def _share_outputs(store: Store, workspace: JobWorkspace, *, succeeded: bool) -> None:
    """Upload the job's directory before the registry says the job ended; the event says why
    a job at its last step is not finished yet (a large model's upload takes a while)."""
    if artifacts.configured() is not None:
        store.add_event(workspace.job.id, "Uploading the job's outputs to the artefact store")
    workspace.share_outputs(succeeded=succeeded)


def _files_of(store: Store, job: Job) -> list:
    ids = [job.training_file, job.validation_file]
    return [store.get_file(file_id) for file_id in ids if file_id]


def _share_after_failure(workspace: JobWorkspace) -> None:
    """Upload a failed job's checkpoints, so that it can resume on any machine."""
    try:
        workspace.share_outputs(succeeded=False)
    except TunelabError as err:  # the job's own failure is the one to report
        log.error("job %s: its outputs were not uploaded: %s", workspace.job.id, err.message)


def _train_job(
    store: Store, workspace: JobWorkspace, control: threading.Event, rewards: RewardFactory | None
):
    """In this process, or in the torchrun processes `--nproc-per-node` asked for."""
    if ranks.nproc_of(workspace.job) > 1:
        return ranks.train_in_ranks(store, workspace, control)
    return train_here(store, workspace, control, rewards=rewards)


def _finish(store: Store, job: Job, result, requested: int) -> None:
    job_id = job.id
    if result.status == "cancelled":
        status = "paused" if requested == PAUSE else "cancelled"
        store.update_job(
            job_id,
            status=status,
            raw_status=status,
            cancel_requested=0,
            finished_at=None if status == "paused" else int(time.time()),
        )
        word = "paused" if status == "paused" else "cancelled"
        store.add_event(job_id, f"Job {word} at step {result.step}/{result.total_steps}")
        return
    name = job.metadata["tunelab_model_name"]
    store.put_model(
        name,
        provider=LOCAL_PROVIDER,
        kind="fine-tuned",
        base_model=job.model,
        job_id=job_id,
        path=str(Path(result.output_dir).resolve()),
        details={"train_loss": result.train_loss, "val_loss": result.val_loss},
    )
    store.update_job(
        job_id,
        status="succeeded",
        raw_status="succeeded",
        fine_tuned_model=name,
        finished_at=int(time.time()),
        estimated_finish=None,
        resolved_hyperparameters=_resolved_config(result.output_dir),
    )
    store.add_event(job_id, f"New fine-tuned model created: {name}")
    store.add_event(job_id, "The job has successfully completed")


def _resolved_config(output_dir) -> dict | None:

    path = Path(output_dir) / "tunelab_config.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("config")


def _fail(store: Store, job_id: str, code: str, message: str) -> None:
    store.update_job(
        job_id,
        status="failed",
        raw_status="failed",
        error_code=code,
        error_message=message,
        finished_at=int(time.time()),
        estimated_finish=None,
    )
    store.add_event(job_id, f"Job failed: {message}", level="error")


class _Heartbeat:
    """Stamps the job every second; sets `control` when a cancel or pause is requested.

    It has its own registry connection: SQLite connections stay in their thread.
    """

    def __init__(self, path: str | Path, job_id: str, worker_id: str, control: threading.Event):
        self.path, self.job_id, self.worker_id, self.control = path, job_id, worker_id, control
        self.requested = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunelab-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with job_registry.Store(self.path) as store:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                requested = store.heartbeat(self.job_id, self.worker_id)
                if requested:
                    self.requested = requested
                    self.control.set()
