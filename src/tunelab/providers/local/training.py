"""One local job trained in this process: its log, its run of the engine, its progress.

The worker calls `train_here` for a job it trains alone; with `--nproc-per-node N` every
torchrun rank calls it (`tunelab.providers.local.ranks`), rank 0 recording. The engine's
per-step callback (`ProgressRecorder`) writes metrics, progress, ETA, checkpoints and events
into the registry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab import cores
from tunelab.engine import run as engine_run  # the module: its TrainingRun is looked up per run
from tunelab.engine.config import TrainConfig
from tunelab.errors import TunelabError
from tunelab.providers.local import artifacts as local_artifacts
from tunelab.providers.local.artifacts import JobWorkspace
from tunelab.providers.local.checkpoint_uploads import CheckpointUploads, checkpoint_uploads
from tunelab.providers.methods import GRADER_KEY

if TYPE_CHECKING:
    from tunelab.registry import Job, Store


if TYPE_CHECKING:  # the engine loads torch: only a process that trains imports it
    from tunelab.engine.reinforcement import Reward
    from tunelab.engine.steps import StepRecord

log = logging.getLogger("tunelab.worker")

EVENT_EVERY_STEPS_FRACTION = 10  # a progress event about 10 times per run


@contextlib.contextmanager
def job_log(workspace: JobWorkspace):
    """What the worker logs while it runs the job, also in its workspace's log."""
    path = workspace.log_path
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


# How a reinforcement job's grader (its definition) becomes the engine's reward. Graders sit
# above the providers (a model grader asks a provider), so the program that runs the worker
# (`tunelab worker`) hands this in.
RewardFactory = Callable[[dict], "Reward"]


def job_reward(job: Job, rewards: RewardFactory | None) -> Reward | None:
    """The reward a reinforcement job trains with (None for other jobs)."""
    recorded = (job.metadata or {}).get(GRADER_KEY)
    if recorded is None:
        return None
    if rewards is None:
        raise TunelabError(
            "grader_unavailable",
            "this worker cannot grade answers, so it cannot train a reinforcement job.",
            hint="run the job with `tunelab worker` (which grades with tunelab's graders)",
        )
    return rewards(json.loads(recorded))


def train_here(
    store: Store,
    workspace: JobWorkspace,
    control,
    *,
    main: bool = True,
    rewards: RewardFactory | None = None,
):
    """Train the workspace's job here; `main` is False on the torchrun ranks that record
    nothing; `rewards` makes a reinforcement job's reward from its grader."""

    job = workspace.job
    assert job.training_file is not None  # a local job is created with its training file
    train_file = store.get_file(job.training_file)
    train_path = local_artifacts.training_path(train_file)
    val_path = (
        local_artifacts.training_path(store.get_file(job.validation_file))
        if job.validation_file
        else None
    )
    base = job.metadata.get("tunelab_base_path") or job.model
    if job.model.startswith("ft:") and not Path(base).exists():  # trained on another machine
        base = local_artifacts.model_dir(store.get_model(job.model))
    with checkpoint_uploads(workspace, store.path, main=main) as uploads:
        run = engine_run.TrainingRun(
            str(base),
            train_path,
            val_path,
            workspace.directory,
            TrainConfig.from_settings(job.hyperparameters),
            metadata={
                "job_id": job.id,
                "base_model": job.model,
                "train_file_sha256": train_file.checksum,
            },
            resume=True,  # continues from a checkpoint when a previous attempt left one
            callback=ProgressRecorder(store, workspace, uploads),
            cancel=control,
            reward=job_reward(job, rewards),
        )
        with run:  # loads the base model (torch loads only in workers)
            assert run.info is not None  # entering the run loaded it
            if main:
                store.add_event(job.id, f"Loaded base model {run.info.name}")
            log.info("loaded base model %s; training on %s", run.info.name, train_path)
            return run.train()


class ProgressRecorder:
    """The engine's per-step callback: metrics, progress, checkpoints (recorded relative to
    the job's directory, and handed to `uploads`) and events."""

    def __init__(
        self, store: Store, workspace: JobWorkspace, uploads: CheckpointUploads | None = None
    ) -> None:
        self.store, self.job_id, self.workspace = store, workspace.job.id, workspace
        self.uploads = uploads
        self.trained_tokens: int | None = None
        self.announced = False

    def __call__(self, record: StepRecord) -> None:
        step, total = record.step, record.total_steps
        if not self.announced:  # whether this job shares the cores politely, for the record
            self.announced = True
            self.store.add_event(self.job_id, f"Computing with {cores.describe(record.threads)}")
        if self.trained_tokens is None:  # a resumed run counts the steps before it too
            earlier = self.store.list_metrics(self.job_id)
            self.trained_tokens = sum(m["tokens"] for m in earlier if m["step"] < step)
        self.trained_tokens += record.tokens
        metric = record.as_metrics()
        validation = f", validation loss {record.val_loss:.4f}" if record.validated else ""
        log.info(
            "step %d/%d: loss %.4f%s, %.0f tokens/s",
            step,
            total,
            record.loss,
            validation,
            record.tokens_per_second,
        )
        self.store.add_metric(self.job_id, step, metric)
        self.store.update_job(
            self.job_id,
            progress={"step": step, "total_steps": total, **metric},
            trained_tokens=self.trained_tokens,
            estimated_finish=int(time.time() + record.eta_seconds),
        )
        if step == 1 or step == total or step % max(1, total // EVENT_EVERY_STEPS_FRACTION) == 0:
            message = f"Step {step}/{total}: training loss={record.loss:.4f}"
            if record.validated:
                message += f", validation loss={record.val_loss:.4f}"
            self.store.add_event(self.job_id, message, type="metrics", data=metric)
        if record.checkpoint is not None:
            name = self.workspace.checkpoint_name(record.checkpoint)
            self.store.add_checkpoint(
                self.job_id, step, fine_tuned_model_checkpoint=name, metrics=metric
            )
            self.store.add_event(self.job_id, f"Checkpoint saved at step {step}")
            forget_missing_checkpoints(self.store, self.workspace)
            if self.uploads is not None:
                self.uploads.saved(step)


def forget_missing_checkpoints(store: Store, workspace: JobWorkspace) -> None:
    """The registry lists the checkpoints the job's directory holds: the engine keeps the
    latest few, and a job resumed on another machine continues from the checkpoints it
    uploaded, not from those saved after them."""
    job_id = workspace.job.id
    gone = [
        point.step
        for point in store.list_checkpoints(job_id)
        if not point.fine_tuned_model_checkpoint
        or not workspace.checkpoint_here(point.fine_tuned_model_checkpoint).exists()
    ]
    if gone:
        store.delete_checkpoints(job_id, gone)
