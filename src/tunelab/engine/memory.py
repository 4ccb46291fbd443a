"""The training process's memory: what it holds now and at its peak, read once per step, and
what the allocator keeps of a finished step's memory, handed back (`release_freed_memory`).

Both figures are cheap reads of what the kernel already counts: the resident set now
(`/proc/self/statm`) and its high-water mark since the process began (`ru_maxrss`, the figure
the benchmarks compare with TRL's). Where a platform has neither (no procfs, no `resource`
module) a figure is None rather than a guess.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

_STATM = Path("/proc/self/statm")
_MB = 1024 * 1024


@dataclass(frozen=True)
class ResidentMemory:
    """The process's resident memory in MB: now, and the most it has held so far."""

    now_mb: float | None
    peak_mb: float | None


def resident_memory() -> ResidentMemory:
    return ResidentMemory(_current_mb(), _peak_mb())


def _current_mb() -> float | None:
    try:
        pages = int(_STATM.read_text().split()[1])  # the second field: resident pages
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / _MB


def release_freed_memory() -> None:
    """Hand the memory that glibc's allocator keeps after a step back to the system.

    A step's activations are freed when its backward ends, but glibc returns freed heap memory
    only from the top of its heap: on DocSpider, 3.7 GB of the 4.2 GB heap stayed resident
    after the first step while unused, and holes of it are what later steps' differently
    shaped tensors fragment. `malloc_trim(0)` releases every free page (about a millisecond,
    against seconds a step). A no-op where the C library is not glibc.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def _glibc_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):  # musl has no malloc_trim
        return None


_malloc_trim = _glibc_malloc_trim()


def _peak_mb() -> float | None:
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux counts KiB, macOS bytes.
    return peak / _MB if sys.platform == "darwin" else peak / 1024
