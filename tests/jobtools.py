"""Helpers for tests that drive jobs: a real worker process, polling, registry rows."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tunelab.registry import Job, Store


def worker_process(*extra: str) -> subprocess.Popen:
    """A real `tunelab worker` process on this test's TUNELAB_HOME."""
    return subprocess.Popen(
        [sys.executable, "-m", "tunelab", "worker", *extra],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.05):
    """Poll `predicate()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def job_row(job_id: str) -> Job:
    with Store() as store:
        return store.get_job(job_id)
