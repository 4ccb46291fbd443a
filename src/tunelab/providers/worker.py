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
import logging
import os
import secrets
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from tunelab import artifacts, cores
from tunelab.errors import TunelabError
from tunelab.providers import local_artifacts
from tunelab.providers.checkpoint_uploads import CheckpointUploads, checkpoint_uploads
from tunelab.providers.local import JOB_LOG, PAUSE
from tunelab.registry import Job, Store
from tunelab.settings import get_settings

log = logging.getLogger("tunelab.worker")

HEARTBEAT_SECONDS = 1.0
LOST_AFTER_SECONDS = 120.0  # a heartbeat this old means the worker is gone, wherever it ran
EVENT_EVERY_STEPS_FRACTION = 10  # a progress event about 10 times per run


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
) -> int:
    """Run queued local jobs until stopped (or idle for `exit_when_idle` seconds).

    Returns the number of jobs run.
    """
    identity, stop = worker_identity(), stop or threading.Event()
    done, idle_since = 0, time.monotonic()
    with Store() as store:
        recover_lost_jobs(store)
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            job = store.claim_next_job("local", identity)
            if job is None:
                if exit_when_idle is not None and time.monotonic() - idle_since > exit_when_idle:
                    break
                stop.wait(poll_seconds)
                continue
            run_job(store, job, identity)
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


def run_auto_worker(idle_seconds: float = 5.0) -> int:
    """The worker `jobs create` starts: one per machine, exits when the queue is empty.

    After letting go of the lock it looks at the queue once more, so a job queued while it
    was exiting (whose own worker found the lock taken) is never stranded.
    """
    done = 0
    while True:
        with machine_lock() as held:
            if not held:
                return done
            done += run_worker(exit_when_idle=idle_seconds)
        with Store() as store:
            if not store.list_jobs(provider="local", statuses=("queued",), limit=1):
                return done


def run_job(store: Store, job: Job, identity: dict) -> None:
    """Train one claimed job to its end: succeeded, cancelled, paused or failed."""
    job_id, job = job.id, local_artifacts.on_this_machine(job)
    store.add_event(job_id, f"Fine-tuning job started by {identity['worker_id']}")
    control = threading.Event()
    beat = _Heartbeat(store.path, job_id, identity["worker_id"], control)
    beat.start()
    try:
        if _bring_here(store, job):
            _run_claimed(store, job, identity, control, beat)
    finally:
        beat.stop()


def _bring_here(store: Store, job: Job) -> bool:
    """Fetch what the job needs from the artefact store; False (the job failed) if it cannot.

    This comes before the job's log opens in its directory: the fetch may replace it.
    """
    try:
        local_artifacts.bring_here(job, _files_of(store, job))
    except TunelabError as err:
        log.error("job %s failed: [%s] %s", job.id, err.code, err.message)
        _fail(store, job.id, err.code, err.message + (f" ({err.hint})" if err.hint else ""))
        return False
    forget_missing_checkpoints(store, job)
    return True


def _run_claimed(store: Store, job: Job, identity: dict, control, beat) -> None:
    job_id = job.id
    with _job_log(job):
        log.info("job %s started by %s", job_id, identity["worker_id"])
        try:
            result = _train_job(store, job, control)
            _share_outputs(store, job, succeeded=result.status != "cancelled")
        except TunelabError as err:
            log.error("job %s failed: [%s] %s", job_id, err.code, err.message)
            _share_after_failure(job)
            _fail(store, job_id, err.code, err.message + (f" ({err.hint})" if err.hint else ""))
        except Exception as err:  # a bug: keep the traceback in the worker's log, fail the job
            log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
            _share_after_failure(job)
            _fail(store, job_id, "internal_error", f"{type(err).__name__}: {err}")
        else:
            _finish(store, store.get_job(job_id), result, beat.requested)
            log.info("job %s ended: %s at step %d/%d", job_id, result.status, result.step,
                     result.total_steps)  # fmt: skip


def _share_outputs(store: Store, job: Job, *, succeeded: bool) -> None:
    """Upload the job's directory before the registry says the job ended; the event says why
    a job at its last step is not finished yet (a large model's upload takes a while)."""
    if artifacts.configured() is not None:
        store.add_event(job.id, "Uploading the job's outputs to the artefact store")
    local_artifacts.share_outputs(job, succeeded=succeeded)


def _files_of(store: Store, job: Job) -> list:
    ids = [job.training_file, job.validation_file]
    return [store.get_file(file_id) for file_id in ids if file_id]


def _share_after_failure(job: Job) -> None:
    """Upload a failed job's checkpoints, so that it can resume on any machine."""
    try:
        local_artifacts.share_outputs(job, succeeded=False)
    except TunelabError as err:  # the job's own failure is the one to report
        log.error("job %s: its outputs were not uploaded: %s", job.id, err.message)


@contextlib.contextmanager
def _job_log(job: Job):
    """What the worker logs while it runs `job`, also in `finetune.log` in the job's directory
    (as seed 001's fine-tuning log; `jobs show` names it)."""
    if not job.output_dir:
        yield
        return
    path = Path(job.output_dir) / JOB_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        handler.close()


def _train_job(store: Store, job: Job, control: threading.Event):
    """In this process, or in the torchrun processes `--nproc-per-node` asked for."""
    from tunelab.providers import worker_ranks

    if worker_ranks.nproc_of(job) > 1:
        return worker_ranks.train_in_ranks(store, job, control)
    return _train(store, job, control)


def _train(store: Store, job: Job, control, *, main: bool = True):
    """Train `job` here; `main` is False on the torchrun ranks that record nothing."""
    from tunelab.engine import TrainConfig, load_base, train  # torch loads only in workers

    config = TrainConfig.from_settings(job.hyperparameters)
    train_file = store.get_file(job.training_file)
    train_path = local_artifacts.training_path(train_file)
    val_path = (local_artifacts.training_path(store.get_file(job.validation_file))
                if job.validation_file else None)  # fmt: skip
    base = job.metadata.get("tunelab_base_path") or job.model
    if job.model.startswith("ft:") and not Path(base).exists():  # trained on another machine
        base = local_artifacts.model_dir(store.get_model(job.model))
    model, tokenizer, info = load_base(base, load_in_4bit=config.load_in_4bit)
    if main:
        store.add_event(job.id, f"Loaded base model {info.name}")
    log.info("loaded base model %s; training on %s", info.name, train_path)
    with checkpoint_uploads(job, store.path, main=main) as uploads:
        return train(
            model,
            tokenizer,
            train_path,
            val_path,
            config,
            job.output_dir,
            base_model=info.name,
            metadata={
                "job_id": job.id,
                "base_model": job.model,
                "train_file_sha256": train_file.checksum,
            },
            callback=_ProgressRecorder(store, job, uploads),
            cancel=control,
            resume=True,  # continues from a checkpoint when a previous attempt left one
        )


class _ProgressRecorder:
    """The engine's per-step callback: metrics, progress, checkpoints (recorded relative to
    the job's directory, and handed to `uploads`) and events."""

    def __init__(self, store: Store, job: Job, uploads: CheckpointUploads | None = None) -> None:
        self.store, self.job_id, self.job, self.uploads = store, job.id, job, uploads
        self.trained_tokens: int | None = None
        self.announced = False

    def __call__(self, record: dict) -> None:
        step, total = record["step"], record["total_steps"]
        if not self.announced:  # whether this job shares the cores politely, for the record
            self.announced = True
            self.store.add_event(self.job_id, f"Computing with {cores.describe(record)}")
        if self.trained_tokens is None:  # a resumed run counts the steps before it too
            earlier = self.store.list_metrics(self.job_id)
            self.trained_tokens = sum(m["tokens"] for m in earlier if m["step"] < step)
        self.trained_tokens += record["tokens"]
        metric = {k: v for k, v in record.items() if k not in ("checkpoint", "total_steps")}
        log.info("step %d/%d: loss %.4f%s, %.0f tokens/s", step, total, record["loss"],
                 f", validation loss {record['val_loss']:.4f}" if "val_loss" in record else "",
                 record["tokens_per_second"])  # fmt: skip
        self.store.add_metric(self.job_id, step, metric)
        self.store.update_job(
            self.job_id,
            progress={"step": step, "total_steps": total, **metric},
            trained_tokens=self.trained_tokens,
            estimated_finish=int(time.time() + record["eta_seconds"]),
        )
        if step == 1 or step == total or step % max(1, total // EVENT_EVERY_STEPS_FRACTION) == 0:
            message = f"Step {step}/{total}: training loss={record['loss']:.4f}"
            if "val_loss" in record:
                message += f", validation loss={record['val_loss']:.4f}"
            self.store.add_event(self.job_id, message, type="metrics", data=metric)
        if "checkpoint" in record:
            name = local_artifacts.checkpoint_name(self.job.output_dir, record["checkpoint"])
            self.store.add_checkpoint(
                self.job_id, step, fine_tuned_model_checkpoint=name, metrics=metric
            )
            self.store.add_event(self.job_id, f"Checkpoint saved at step {step}")
            forget_missing_checkpoints(self.store, self.job)
            if self.uploads is not None:
                self.uploads.saved(step)


def forget_missing_checkpoints(store: Store, job: Job) -> None:
    """The registry lists the checkpoints the job's directory holds (`job` as on this machine):
    the engine keeps the latest few, and a job resumed on another machine continues from
    the checkpoints it uploaded, not from those saved after them."""
    gone = [
        point.step
        for point in store.list_checkpoints(job.id)
        if not local_artifacts.checkpoint_here(job, point.fine_tuned_model_checkpoint).exists()
    ]
    if gone:
        store.delete_checkpoints(job.id, gone)


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
        provider="local",
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
    import json

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

    def __init__(self, path: Path, job_id: str, worker_id: str, control: threading.Event):
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
        with Store(self.path) as store:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                requested = store.heartbeat(self.job_id, self.worker_id)
                if requested:
                    self.requested = requested
                    self.control.set()


def recover_lost_jobs(store: Store) -> list[str]:
    """Mark failed every running local job whose worker is gone; returns their ids.

    A read-only registry is left as it is: whoever can write it will recover the jobs.
    """
    if store.read_only:
        return []
    lost = []
    host = socket.gethostname()
    for job in store.list_jobs(provider="local", statuses=("running",), limit=10_000):
        stale = time.time() - (job.heartbeat_at or 0) > LOST_AFTER_SECONDS
        dead = job.worker_host == host and not _process_alive(job.worker_pid)
        if not (stale or dead):
            continue
        step = (job.progress or {}).get("step")
        message = (
            f"the worker running this job (pid {job.worker_pid}) stopped without finishing it"
            + (f", after step {step}" if step else "")
            + f"; `tunelab jobs resume {job.id}` continues from its last checkpoint"
        )
        changed = store.update_job(
            job.id,
            expect=("running",),
            status="failed",
            raw_status="worker_lost",
            error_code="worker_lost",
            error_message=message,
            finished_at=int(time.time()),
        )
        if changed is not None:
            store.add_event(job.id, f"Job failed: {message}", level="error")
            lost.append(job.id)
    return lost


def _process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # a zombie has exited; only its parent has not reaped it yet
        with contextlib.suppress(OSError, IndexError):
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True
