"""Hugging Face libraries' progress bars kept out of tunelab's output.

transformers draws tqdm bars while it converts a GGUF file, loads weights and writes model
shards; in the middle of tunelab's own progress lines (and in piped output, as `\r`
sequences) they are noise. Code that calls those functions runs inside `quiet_progress()`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_progress(swallow_stderr: bool = False) -> Iterator[None]:
    """No transformers progress bar while the block runs (restored after it, if it was on).

    `swallow_stderr`: also drop what the block writes to `sys.stderr`, for transformers'
    GGUF conversion, whose bar is a plain tqdm that ignores transformers' switch (errors
    still propagate as exceptions).
    """
    # heavy: only where transformers is used anyway
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    swallowed = contextlib.redirect_stderr(io.StringIO()) if swallow_stderr else None
    try:
        with swallowed or contextlib.nullcontext():
            yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
