"""Ctrl-C for long work: the first press asks the work to stop cleanly, a second aborts."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from tunelab.cli import common

EXIT_INTERRUPTED = 130  # as a shell reports a command that Ctrl-C stopped
# What an evaluation says at the first Ctrl-C.
KEEPING = "stopping: the items scored so far are kept (Ctrl-C again: abort, keeping nothing)"


@contextlib.contextmanager
def ctrl_c_cancels(
    cancel: threading.Event,
    saying: str = "stopping after this step, with a checkpoint (Ctrl-C again: abort)",
) -> Iterator[None]:
    """The first Ctrl-C asks the run to stop after its current step; a second one aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum, frame) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        common.stderr.print(saying, highlight=False)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
