"""Sharing the CPU cores fairly between tunelab processes that compute.

torch's OpenMP threads busy-wait for work by default: two processes that each run a full
pool on the same cores spin against each other and can each run ten times slower than their
fair share (3,000 small matmuls on a loaded 2-core machine: 137 s with the default wait
policy, 14 s with a passive one). Two remedies, both applied by tunelab itself:

1. **Wait policy.** `OMP_WAIT_POLICY=PASSIVE` (and `KMP_BLOCKTIME=0` for Intel's OpenMP) make
   idle threads sleep instead of spin. OpenMP reads them once, when torch is imported, so
   they are set by `import tunelab` (see `tunelab/__init__.py`), before anything imports
   torch: the `tunelab` command, the worker (`python -m tunelab worker`), the server and a
   script that imports tunelab before torch all get them. A script that imports torch first
   must set them itself (`OMP_WAIT_POLICY=PASSIVE python script.py`). A value the user has
   set is never overridden.
2. **Thread count.** While it computes (training, generation, label scoring) a process
   registers in `$TUNELAB_HOME/compute/` and sizes torch's thread pool to its share of the
   cores: the cores it may use divided by the number of tunelab processes computing (at
   least 1 thread); where that directory cannot be written (a read-only home) the work goes
   on unregistered, with one warning. Long work re-checks the share every few seconds
   (`Share.rebalance`), so a training run gives half the cores to an evaluation that starts
   beside it and takes them back when it ends. `TUNELAB_THREADS` (or `OMP_NUM_THREADS`)
   fixes the count instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tunelab.settings import get_settings

logger = logging.getLogger(__name__)
PASSIVE_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
RECHECK_SECONDS = 5.0


def set_wait_policy() -> None:
    """Put the passive OpenMP wait policy in the environment (before torch is imported)."""
    for name, value in PASSIVE_ENV.items():
        os.environ.setdefault(name, value)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fixed_threads() -> int | None:
    """The thread count the user fixed with TUNELAB_THREADS or OMP_NUM_THREADS, if any."""
    for name in ("TUNELAB_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _registry_dir() -> Path:

    return get_settings().home / "compute"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def computing_processes(directory: Path | None = None) -> list[int]:
    """Pids of the tunelab processes computing now (stale entries are removed)."""
    directory = directory or _registry_dir()
    pids = []
    for entry in directory.glob("*") if directory.is_dir() else ():
        pid = int(entry.name) if entry.name.isdigit() else None
        if pid is not None and _alive(pid):
            pids.append(pid)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()  # a process that died without leaving
    return pids


def fair_threads(n_computing: int, cores: int | None = None) -> int:
    """This process's share of the cores when `n_computing` tunelab processes compute."""
    fixed = fixed_threads()
    if fixed is not None:
        return fixed
    return max(1, (cores or available_cores()) // max(1, n_computing))


class Share:
    """This process's registration as computing, and its thread count (see the docstring)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or _registry_dir()
        self.threads: int | None = None
        self._checked = 0.0

    def rebalance(self, force: bool = False) -> int:
        """Resize torch's pool to this process's share now (at most every RECHECK_SECONDS)."""
        import torch  # torch: in computing processes only

        now = time.monotonic()
        if force or self.threads is None or now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            threads = fair_threads(len(computing_processes(self.directory)))
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            self.threads = threads
        return self.threads


_depth = 0  # nested `computing()` blocks in this process (an evaluation inside a server)
_share: Share | None = None
_lock = threading.Lock()  # the server computes from several threads
_warned = False  # a home that cannot be written is said once per process, not per request


@contextlib.contextmanager
def computing() -> Iterator[Share]:
    """Register this process as computing for the block; yields its `Share`, rebalanced."""
    global _depth, _share
    with _lock:
        if _depth == 0:
            _share = Share()
            _register(_share.directory)
            _share.rebalance(force=True)
        _depth += 1
        share = _share
    try:
        yield share
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                with contextlib.suppress(OSError):
                    (share.directory / str(os.getpid())).unlink()


def _register(directory: Path) -> None:
    """Enter this process in `directory`; where it cannot be written (a read-only home), the
    work goes on unregistered, with a warning: sharing the cores is a courtesy, not a need."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / str(os.getpid())).touch()
    except OSError as err:
        global _warned
        if _warned:
            return
        _warned = True
        logger.warning(
            "cannot register in %s (%s): computing without a share of the cores agreed "
            "with other tunelab processes",
            directory,
            err.strerror or err,
        )


def current_share() -> Share | None:
    """The share of this process while it is inside `computing()`, else None."""
    return _share if _depth else None


def describe(threads: int | None = None) -> str:
    """One line for logs and job events: the threads in use (`threads`, as a training step
    reports them; torch's current count otherwise) and the wait policy."""
    import torch  # torch: in computing processes only

    threads = threads or torch.get_num_threads()
    policy = os.environ.get("OMP_WAIT_POLICY", "default (busy-wait)")
    return f"{threads} thread(s) of {available_cores()} cores, OpenMP wait policy {policy.lower()}"
