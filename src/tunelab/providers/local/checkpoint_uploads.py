"""A running job's checkpoints, uploaded to the artefact store as they are saved.

With `TUNELAB_ARTIFACTS` set, the worker's per-step callback hands every checkpoint the
engine saves to `CheckpointUploads`: one background thread uploads the job's directory as
`JobWorkspace.share_checkpoints` selects it (complete checkpoints not in the store yet,
metrics, loss curve, log) while training goes on, then records an event. A machine that dies
(kill -9, power) thus leaves its last uploaded checkpoint in the store, and the worker that
resumes the job fetches it. Training never waits for an upload: a checkpoint saved while one
runs is sent by the next (which sends everything not sent yet), so at most one waits. When
training ends, `close` stops an unfinished upload between two files; the job's own upload
(when it succeeds, pauses, is cancelled or fails) follows and sends everything.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab import artifacts
from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.errors import TunelabError
from tunelab.providers.local.artifacts import JobWorkspace

if TYPE_CHECKING:
    from tunelab.registry import Store


log = logging.getLogger("tunelab.worker")


class CheckpointUploads:
    """The background uploader of one job's checkpoints (see the module)."""

    def __init__(self, workspace: JobWorkspace, registry: str | Path) -> None:
        self.workspace, self.job, self.registry = workspace, workspace.job, registry
        self._wanted: int | None = None  # the newest checkpoint's step, not yet sent
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="tunelab-uploads", daemon=True)
        self._thread.start()

    def saved(self, step: int) -> None:
        """The engine saved the checkpoint of `step`: upload it (and anything before it)."""
        with self._changed:
            self._wanted = step
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join()

    def _next(self) -> int | None:
        with self._changed:
            while self._wanted is None and not self._closing:
                self._changed.wait()
            step, self._wanted = self._wanted, None
            return None if self._closing else step

    def _run(self) -> None:
        with job_registry.Store(self.registry) as store:  # a connection of its own: one per thread
            while (step := self._next()) is not None:
                self._upload(store, step)

    def _upload(self, store: Store, step: int) -> None:
        try:
            done = self.workspace.share_checkpoints(stop=lambda: self._closing)
        except TunelabError as err:  # training goes on; the job's final upload tries again
            log.warning(
                "job %s: checkpoint at step %d not uploaded: %s", self.job.id, step, err.message
            )
            store.add_event(
                self.job.id, f"Checkpoint at step {step} not uploaded: {err.message}", level="warn"
            )
            return
        if done:
            log.info("job %s: checkpoint at step %d uploaded", self.job.id, step)
            store.add_event(
                self.job.id,
                f"Checkpoint at step {step} uploaded to the artefact "
                "store: the job can resume from it on any machine",
            )


@contextlib.contextmanager
def checkpoint_uploads(workspace: JobWorkspace, registry: str | Path, *, main: bool) -> Iterator:
    """A `CheckpointUploads` for the workspace's job while training runs; None without a
    store (or on a torchrun rank other than rank 0, which records nothing)."""
    if not main or artifacts.configured() is None:
        yield None
        return
    uploads = CheckpointUploads(workspace, registry)
    try:
        yield uploads
    finally:
        uploads.close()
