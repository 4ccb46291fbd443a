"""A local job trained in several processes: the worker supervises torchrun and its ranks.

A job created with `--nproc-per-node N` (N > 1) is not trained inside the worker. The worker
starts `torchrun --nproc-per-node N -m tunelab.providers.local.ranks JOB_ID`, and every rank
reads the job from the registry and runs the engine's data-parallel path
(`engine/distributed.py`). The engine hands its per-step callback to rank 0 alone, so the
registry gets each step's metrics, progress and checkpoints once. The worker keeps the job's
heartbeat and owns its final status:

- cancel or pause: the worker writes a stop file in the job's directory; every rank checks it
  at each step and all stop together after the same step, with a checkpoint. Ranks still
  running `STOP_GRACE_SECONDS` later (e.g. loading a large model) are killed.
- a rank that fails writes its error beside the stop file; torchrun then ends the other ranks
  and the job fails with that rank's error (or, for a rank killed outright, with the exit
  code torchrun reports for it).
- a worker that dies takes torchrun with it (the kernel's parent-death signal), and torchrun
  ends its ranks; `tunelab jobs resume` continues from the last checkpoint.

Rank outputs (and torchrun's own report of a failure) are appended to the job's log.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import orjson

from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.errors import TunelabError
from tunelab.io import atomic_write_text
from tunelab.providers.local.artifacts import JOB_LOG, JobWorkspace
from tunelab.providers.local.jobs import NPROC_KEY
from tunelab.providers.local.training import job_log, train_here
from tunelab.registry import Job

if TYPE_CHECKING:
    from tunelab.registry import Store


STOP_FILE = ".ranks-stop"
RESULT_FILE = ".ranks-result.json"
ERROR_PREFIX = ".ranks-error-"
STOP_GRACE_SECONDS = 60.0
POLL_SECONDS = 0.5


def nproc_of(job: Job) -> int:
    return int((job.metadata or {}).get(NPROC_KEY) or 1)


# -- the worker's side ----------------------------------------------------------------------


def train_in_ranks(store: Store, workspace: JobWorkspace, control) -> SimpleNamespace:
    """Train the job in `nproc_of(job)` torchrun processes; returns what rank 0 reported."""
    from tunelab.engine.distributed import torchrun_command  # torch: only when it trains

    job, out = workspace.job, workspace.directory
    nproc = nproc_of(job)
    out.mkdir(parents=True, exist_ok=True)
    _remove_exchange_files(out)  # left by an earlier attempt of this job
    command = torchrun_command([job.id], nproc, module=__name__, every_rank_output=True)
    with workspace.log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            preexec_fn=_die_with_parent,
        )
    store.add_event(job.id, f"Training in {nproc} processes (torchrun, pid {process.pid})")
    try:
        return _outcome(store, job, out, nproc, *supervise(process, control, out))
    finally:
        _remove_exchange_files(out)  # the directory becomes the model's: only its files stay


def _outcome(store: Store, job: Job, out: Path, nproc: int, code: int, stopped: bool):
    if (out / RESULT_FILE).exists():
        return SimpleNamespace(**orjson.loads((out / RESULT_FILE).read_bytes()))
    if stopped:  # killed after the grace period: stopped where its last step left it
        progress = store.get_job(job.id).progress or {}
        return SimpleNamespace(
            status="cancelled",
            step=progress.get("step", 0),
            total_steps=progress.get("total_steps", 0),
        )
    raise rank_failure(out, code, nproc)


def _remove_exchange_files(out: Path) -> None:
    for path in (out / STOP_FILE, out / RESULT_FILE, *out.glob(ERROR_PREFIX + "*")):
        path.unlink(missing_ok=True)


def supervise(process: subprocess.Popen, control, out: Path) -> tuple[int, bool]:
    """Wait for torchrun; pass a cancel or pause on to the ranks (then kill them if they
    linger). Returns torchrun's exit code and whether a stop was asked for."""
    asked_at = None
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(POLL_SECONDS), asked_at is not None
        if control.is_set() and asked_at is None:
            (out / STOP_FILE).touch()
            asked_at = time.monotonic()
        if asked_at is not None and time.monotonic() - asked_at > STOP_GRACE_SECONDS:
            kill_tree(process.pid)


def rank_failure(out: Path, code: int, nproc: int) -> TunelabError:
    """Why the ranks stopped. One rank's failure makes the others fail too (a collective
    with a dead peer errors), so the cause is chosen in this order: a rank's own error
    (bad data, out of memory), a rank killed by a signal (as torchrun reports it), a rank's
    crash, then torchrun's exit code."""
    reports = sorted(
        (int(p.name.rsplit("-", 1)[1]), orjson.loads(p.read_bytes()))
        for p in out.glob(ERROR_PREFIX + "*")
    )
    killed = _killed_ranks(out / JOB_LOG)
    own = [(rank, e) for rank, e in reports if e["code"] != "internal_error"]
    crashes = [(rank, e) for rank, e in reports if not _PEER_ERROR.search(e["message"])]
    chosen = own or ([] if killed else crashes)
    if chosen:
        rank, error = chosen[0]
        return TunelabError(error["code"], f"rank {rank} of {nproc} failed: {error['message']}")
    if killed:
        rank, exit_code = killed[0]
        where = f"rank {rank} of {nproc} was killed (exit code {exit_code})"
    elif reports:
        where = f"rank {reports[0][0]} of {nproc} failed: {reports[0][1]['message']}"
    else:
        where = f"torchrun exited with code {code}"
    return TunelabError(
        "rank_failed",
        f"a training process stopped: {where}; the other ranks were ended",
        hint=f"the end of {out / JOB_LOG} has torchrun's report; "
        "`tunelab jobs resume` continues from the last checkpoint",
    )


# A collective whose peer is gone: a consequence of another rank's failure, not its cause.
_PEER_ERROR = re.compile(r"gloo|nccl|connection|peer|socket|timed out", re.IGNORECASE)


def _killed_ranks(log: Path) -> list[tuple[int, int]]:
    """(rank, exit code) of the ranks a signal ended (a negative exit code), by torchrun's
    report at the end of the log: its root cause first (it ends the other ranks itself)."""
    with contextlib.suppress(OSError):
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 20_000))
            tail = handle.read().decode("utf-8", "replace")
        start = tail.rfind("ChildFailedError")
        report = tail[start:] if start >= 0 else tail
        cause = report.rfind("Root Cause")
        ordered = report[cause:] + report[:cause] if cause >= 0 else report
        found = re.findall(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*(-\d+)", ordered)
        return list(dict.fromkeys((int(rank), int(exit_code)) for rank, exit_code in found))
    return []


def _die_with_parent() -> None:
    """In the child before it runs torchrun: SIGTERM it when the worker dies (Linux). The
    function is looked up before the fork: the child of a threaded parent must not dlopen."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_PRCTL: Callable[..., int] | None
try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: an orphaned torchrun ends with its job only
    _PRCTL = None


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (torchrun starts ranks in sessions of their own, so a
    process group does not hold them all)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree, grew = {pid}, True
    while grew:
        found = {child for child, parent in parents.items() if parent in tree}
        grew = not found <= tree
        tree |= found
    return tree - {pid}


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it."""
    for victim in (*descendants(pid), pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


# -- each rank's side -----------------------------------------------------------------------


class StopFile:
    """The ranks' cancel flag: set once the worker has written the stop file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def is_set(self) -> bool:
        return self.path.exists()


def run_rank(job_id: str) -> int:
    """One torchrun rank of a local job: train it; rank 0 records progress and the result."""
    from tunelab.engine.distributed import Ranks  # torch: only in the ranks, never the worker

    ranks = Ranks.from_env()
    with job_registry.Store() as store:
        workspace = JobWorkspace.of(store.get_job(job_id))
        out = workspace.directory
        try:
            with job_log(workspace) if ranks.is_main else contextlib.nullcontext():
                result = train_here(store, workspace, StopFile(out / STOP_FILE), main=ranks.is_main)
        except Exception as err:
            _report_error(out / f"{ERROR_PREFIX}{ranks.rank}", err)
            return 1
    if ranks.is_main:
        atomic_write_text(out / RESULT_FILE, orjson.dumps(result.to_dict()).decode())
    return 0


def _report_error(path: Path, err: Exception) -> None:
    if isinstance(err, TunelabError):
        error = {"code": err.code, "message": err.message + (f" ({err.hint})" if err.hint else "")}
    else:  # a bug: the traceback goes to the job's log
        traceback.print_exc()
        error = {"code": "internal_error", "message": f"{type(err).__name__}: {err}"}
    atomic_write_text(path, orjson.dumps(error).decode())


if __name__ == "__main__":
    sys.exit(run_rank(sys.argv[1]))
