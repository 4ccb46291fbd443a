"""The `python` grader: the user's `grade(sample, item)` run in a separate, limited process.

Never in the caller's process (a server keeps answering whatever the code does): each call
starts `sandbox_runner.py` under `python -I` and waits at most `wall_seconds`. What is
guaranteed: the code cannot touch the caller's memory; it is killed past its CPU seconds
and its wall time; its address space is capped (a large allocation fails as MemoryError);
it cannot start processes or write files over 1 MB; `socket` refuses to open connections,
and where the kernel allows unprivileged namespaces (most Linux machines) the process has
no network interface at all. What is not: the code runs as the caller's user and can read
the files that user can read; on a kernel without user namespaces a determined program
could still reach the network through raw system calls (ctypes). Run untrusted graders
on a machine or container that holds nothing secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("sandbox_runner.py")


@dataclass(frozen=True)
class PythonLimits:
    """How much one grading call may use; OpenAI's own limits are the defaults (2 GB,
    2 minutes). `TUNELAB_PYTHON_GRADER_SECONDS` and `..._MEMORY_MB` change them."""

    wall_seconds: float = 120.0
    cpu_seconds: int = 120
    memory_bytes: int = 2 * 1024**3

    @classmethod
    def from_environment(cls) -> PythonLimits:
        seconds = float(os.environ.get("TUNELAB_PYTHON_GRADER_SECONDS") or cls.wall_seconds)
        memory_mb = int(os.environ.get("TUNELAB_PYTHON_GRADER_MEMORY_MB") or 2048)
        return cls(seconds, max(1, int(seconds)), memory_mb * 1024**2)


@dataclass(frozen=True)
class PythonOutcome:
    """A score, or why there is none: `error` is `timeout`, `memory`, `runtime` (the code
    raised, or `grade` returned no number) or `server` (the runner itself failed)."""

    score: float = 0.0
    error: str | None = None
    detail: str | None = None


def run_python_grader(
    source: str, sample: dict, item: dict, limits: PythonLimits | None = None
) -> PythonOutcome:
    """`grade(sample, item)` of `source`, run in its own process under `limits`."""
    limits = limits or PythonLimits.from_environment()
    request = {
        "source": source,
        "sample": sample,
        "item": item,
        "memory_bytes": limits.memory_bytes,
        "cpu_seconds": limits.cpu_seconds,
    }
    try:
        finished = subprocess.run(
            [sys.executable, "-I", str(RUNNER)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=limits.wall_seconds,
            env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"},
        )
    except subprocess.TimeoutExpired:
        return PythonOutcome(error="timeout", detail=f"stopped after {limits.wall_seconds:g} s")
    return _outcome(finished, limits)


def _outcome(finished: subprocess.CompletedProcess, limits: PythonLimits) -> PythonOutcome:
    lines = finished.stdout.strip().splitlines()
    try:
        reply = json.loads(lines[-1]) if lines else {}
    except ValueError:
        reply = {}
    if "score" in reply:
        return PythonOutcome(score=reply["score"])
    if "error" in reply:
        return PythonOutcome(error=reply["error"], detail=reply.get("detail"))
    if finished.returncode in (-9, -24):  # SIGKILL / SIGXCPU: the CPU limit
        return PythonOutcome(error="timeout", detail=f"used {limits.cpu_seconds} s of CPU")
    detail = (finished.stderr or "no output")[-2000:]
    return PythonOutcome(error="server", detail=f"exit {finished.returncode}: {detail}")
