"""Local jobs across machines: their files, workspaces and models through the artefact store.

With `TUNELAB_ARTIFACTS` set (`tunelab.artifacts`), a job's output directory in the registry
is the store's URL (`<store>/jobs/<job id>`) and every machine works in its own
`$TUNELAB_HOME/jobs/<job id>`; the files a job trains on are found in this machine's
`$TUNELAB_HOME/files`, else fetched from the store (and checked against their checksum).
Unset, every path in the registry is a path on this machine (or on a directory all mount),
as before.

A `JobWorkspace` is one job's directory on this machine and everything that moves in and out
of it: its files and another machine's outputs fetched before it trains, its checkpoints
(named the same on every machine) uploaded while it runs, its outputs when it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from tunelab import artifacts
from tunelab.engine.sources import OUTPUT_MARKER
from tunelab.errors import TunelabError
from tunelab.io import file_sha256
from tunelab.registry import File, Job, Model
from tunelab.settings import get_settings

JOB_LOG = "finetune.log"  # the worker's log of one job, in the job's directory
CHECKPOINTS = "checkpoints"  # the engine's checkpoint directory: not shared once a job succeeds
COMPLETE = "COMPLETE"  # the engine's marker, written last into a checkpoint (engine/checkpoint.py)


def file_name(checksum: str) -> str:
    """A kept training file's name, in `$TUNELAB_HOME/files` and in the store's `files/`."""
    return f"{checksum[:24]}.jsonl"


def share_file(kept: Path) -> None:
    """Upload a file kept in `$TUNELAB_HOME/files` to the store, when there is one."""
    store = artifacts.configured()
    if store is not None:
        store.put_file(kept, f"files/{kept.name}")


def training_path(file: File) -> Path:
    """A registered file's bytes on this machine: where it was kept, else fetched."""
    if file.path and Path(file.path).exists():
        return Path(file.path)
    here = get_settings().home / "files" / file_name(file.checksum or "")
    if not here.exists():
        store = artifacts.configured()
        if store is None or not file.checksum:
            raise _not_here(f"file {file.id} ({file.filename})")
        if not store.get_file(f"files/{here.name}", here):
            raise _not_here(f"file {file.id} ({file.filename})", store.url)
    if file_sha256(here) != file.checksum:
        here.unlink()
        raise TunelabError(
            "file_corrupt",
            f"the copy of file {file.id} fetched to {here} has not the bytes registered for it.",
            hint="upload the file again; the next fetch replaces the copy",
        )
    return here


def output_location(job_id: str) -> str:
    """Where a new job's outputs are recorded: the store's URL, else this machine's directory."""
    store = artifacts.configured()
    if store is not None:
        return store.url_of(f"jobs/{job_id}")
    return str(get_settings().home / "jobs" / job_id)


@dataclass(frozen=True)
class JobWorkspace:
    """A local job's directory on this machine, and what moves in and out of it."""

    job: Job
    directory: Path

    @classmethod
    def of(cls, job: Job) -> JobWorkspace:
        """Where this machine trains `job`: the recorded directory when it is a path here and
        no store is set, else `$TUNELAB_HOME/jobs/<job id>`."""
        recorded = job.output_dir
        if recorded and "://" not in recorded and artifacts.configured() is None:
            return cls(job, Path(recorded))
        return cls(job, get_settings().home / "jobs" / job.id)

    @property
    def log_path(self) -> Path:
        """The worker's log of this job (seed 001's fine-tuning log; `jobs show` names it)."""
        return self.directory / JOB_LOG

    def bring_here(self, files: list[File]) -> None:
        """Before a worker trains the job: its files, and the outputs and checkpoints another
        machine uploaded when it stopped the job there."""
        store = artifacts.configured()
        if store is not None:
            store.sync_dir(f"jobs/{self.job.id}", self.directory)
        for file in files:
            training_path(file)

    def share_outputs(self, *, succeeded: bool) -> None:
        """Upload the job's directory when it ends: without checkpoints once it succeeded."""
        store = artifacts.configured()
        if store is None or not self.directory.is_dir():
            return
        leave_out = (CHECKPOINTS,) if succeeded else ()
        store.put_dir(
            self.directory, f"jobs/{self.job.id}", leave_out=leave_out, fixed=(CHECKPOINTS,)
        )

    def share_checkpoints(self, *, stop=None) -> bool:
        """Upload what a running job needs to resume elsewhere: its complete checkpoints
        (those the store has are not sent again; those the engine pruned leave it) and its
        top-level files (metrics, loss curve, log). False when `stop` ended it early, or no
        store is set."""
        store = artifacts.configured()
        if store is None or not self.directory.is_dir():
            return False
        files = resumable_files(self.directory)
        return store.put_dir(
            self.directory, f"jobs/{self.job.id}", files=files, fixed=(CHECKPOINTS,), stop=stop
        )

    def checkpoint_name(self, saved: str | Path) -> str:
        """How the registry records a checkpoint the engine saved at `saved`: relative to the
        job's directory (`checkpoints/step-00000010`), the same on every machine."""
        path = Path(saved)
        with contextlib.suppress(ValueError):
            return path.relative_to(self.directory).as_posix()
        return f"{CHECKPOINTS}/{path.name}" if path.parent.name == CHECKPOINTS else str(saved)

    def checkpoint_here(self, recorded: str) -> Path:
        """A recorded checkpoint's directory on this machine (registries from before
        checkpoints were recorded relative to their job hold the worker's absolute path: read
        the same)."""
        return self.directory / _relative(recorded)

    def checkpoint_location(self, recorded: str) -> str:
        """Where this machine reaches a checkpoint: its directory here, else its URL in the
        store (uploaded when it was saved), else the recorded directory (on the machine that
        ran it)."""
        here = self.checkpoint_here(recorded)
        if here.exists():
            return str(here)
        if self.job.output_dir and "://" in self.job.output_dir:
            return f"{self.job.output_dir}/{_relative(recorded)}"
        return str(here)

    def forget(self) -> None:
        """Remove the job's directory here and its uploaded outputs (it made no model)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        store = artifacts.configured()
        if store is not None:
            store.remove(f"jobs/{self.job.id}")


def on_this_machine(job: Job) -> Job:
    """`job` with the directory this machine trains it in as its `output_dir`."""
    return dataclasses.replace(job, output_dir=str(JobWorkspace.of(job).directory))


def resumable_files(here: Path) -> dict[str, int]:
    """Relative name → size: the job directory's own files (not the hidden ones, such as the
    ranks' stop file, nor the marker of a finished output: a job resumed from this upload is
    unfinished) and the files of its complete checkpoints (not the one being written)."""
    files = {
        p.name: p.stat().st_size
        for p in sorted(here.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name != OUTPUT_MARKER
    }
    root = here / CHECKPOINTS
    points = sorted(root.iterdir()) if root.is_dir() else []
    for point in points:
        if point.is_dir() and not point.name.startswith(".") and (point / COMPLETE).is_file():
            with contextlib.suppress(FileNotFoundError):  # pruned meanwhile: left out
                for path in sorted(point.rglob("*")):
                    if path.is_file():
                        files[path.relative_to(here).as_posix()] = path.stat().st_size
    return files


def _relative(recorded: str) -> str:
    path = Path(recorded)
    if path.is_absolute() and path.parent.name == CHECKPOINTS:
        return f"{CHECKPOINTS}/{path.name}"
    return recorded


def model_dir(model: Model) -> str:
    """A local `ft:` model's directory on this machine, fetched from the store if need be."""
    if model.path and Path(model.path).exists():
        return model.path
    store = artifacts.configured()
    if store is None or not model.job_id:
        raise _not_here(f"model {model.id}")
    here = get_settings().home / "jobs" / model.job_id
    store.sync_dir(f"jobs/{model.job_id}", here)
    if not here.is_dir():
        raise _not_here(f"model {model.id}", store.url)
    return str(here)


def model_location(model: Model) -> str | None:
    """Where this machine reaches a local `ft:` model's directory: where its worker wrote it,
    else the copy fetched here, else its URL in the store (the registry holds the worker's
    path, which another machine may not have)."""
    if not model.path or Path(model.path).exists() or not model.job_id:
        return model.path
    here = get_settings().home / "jobs" / model.job_id
    if here.is_dir():
        return str(here)
    store = artifacts.configured()
    return store.url_of(f"jobs/{model.job_id}") if store is not None else model.path


def _not_here(what: str, store_url: str | None = None) -> TunelabError:
    if store_url:
        where = f"neither on this machine nor in the artefact store {artifacts.shown(store_url)}"
        hint = (
            "the machine that has it sets the same TUNELAB_ARTIFACTS; files are shared "
            "when a job is created, outputs when it ends"
        )
    else:
        where = "not on this machine"
        hint = (
            "set TUNELAB_ARTIFACTS to a directory or fsspec URL every machine reaches "
            "(on every machine), or mount the same TUNELAB_HOME everywhere"
        )
    return TunelabError("artifact_not_here", f"the files of {what} are {where}.", hint=hint)
