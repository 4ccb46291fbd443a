"""Running local jobs whose worker is gone: found and marked failed (resumable).

A worker that dies leaves a running job with a stale heartbeat and a dead pid;
`recover_lost_jobs` (run by every tunelab command and worker at start) marks it failed, and
`tunelab jobs resume` continues it from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.types import LOCAL_PROVIDER

if TYPE_CHECKING:
    from tunelab.registry import Store

LOST_AFTER_SECONDS = 120.0  # a heartbeat this old means the worker is gone, wherever it ran


def recover_lost_jobs(store: Store) -> list[str]:
    """Mark failed every running local job whose worker is gone; returns their ids.

    A read-only registry is left as it is: whoever can write it will recover the jobs.
    """
    if store.read_only:
        return []
    lost = []
    host = socket.gethostname()
    for job in store.list_jobs(provider=LOCAL_PROVIDER, statuses=("running",), limit=10_000):
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
