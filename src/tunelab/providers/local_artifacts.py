"""Local jobs across machines: their files and outputs through the artefact store.

With `TUNELAB_ARTIFACTS` set (`tunelab.artifacts`), a job's output directory in the registry
is the store's URL (`<store>/jobs/<job id>`) and every machine works in its own
`$TUNELAB_HOME/jobs/<job id>`; the files a job trains on are found in this machine's
`$TUNELAB_HOME/files`, else fetched from the store (and checked against their checksum).
Unset, every path in the registry is a path on this machine (or on a directory all mount),
as before.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunelab import artifacts
from tunelab.errors import TunelabError
from tunelab.io import file_sha256
from tunelab.registry import File, Job, Model
from tunelab.settings import get_settings

CHECKPOINTS = "checkpoints"  # the engine's checkpoint directory: not shared once a job succeeds


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


def on_this_machine(job: Job) -> Job:
    """`job` with the directory this machine trains it in as its `output_dir`."""
    if job.output_dir and "://" not in job.output_dir and artifacts.configured() is None:
        return job
    here = get_settings().home / "jobs" / job.id
    return dataclasses.replace(job, output_dir=str(here))


def bring_here(job: Job, files: list[File]) -> None:
    """Before a worker trains `job` (already `on_this_machine`): its files, and the outputs
    and checkpoints another machine uploaded when it stopped the job there."""
    store = artifacts.configured()
    if store is not None:
        store.sync_dir(f"jobs/{job.id}", Path(job.output_dir))
    for file in files:
        training_path(file)


def share_outputs(job: Job, *, succeeded: bool) -> None:
    """Upload the job's directory when it ends: without checkpoints once it succeeded."""
    store = artifacts.configured()
    here = Path(job.output_dir or "")
    if store is None or not here.is_dir():
        return
    store.put_dir(here, f"jobs/{job.id}", leave_out=(CHECKPOINTS,) if succeeded else ())


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


def forget(job: Job) -> None:
    """Remove a job's uploaded outputs (it made no model)."""
    store = artifacts.configured()
    if store is not None:
        store.remove(f"jobs/{job.id}")


def _not_here(what: str, store_url: str | None = None) -> TunelabError:
    if store_url:
        where = f"neither on this machine nor in the artefact store {artifacts.shown(store_url)}"
        hint = "the machine that has it sets the same TUNELAB_ARTIFACTS; files are shared " \
               "when a job is created, outputs when it ends"  # fmt: skip
    else:
        where = "not on this machine"
        hint = "set TUNELAB_ARTIFACTS to a directory or fsspec URL every machine reaches " \
               "(on every machine), or mount the same TUNELAB_HOME everywhere"  # fmt: skip
    return TunelabError("artifact_not_here", f"the files of {what} are {where}.", hint=hint)
