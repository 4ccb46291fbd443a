"""`tunelab train`'s progress bar: what it shows between steps."""

from __future__ import annotations

import io

from rich.console import Console

from tunelab.cli import common
from tunelab.cli.progress import TrainingProgress


def test_the_bar_shows_a_reinforcement_steps_answers_as_they_finish(monkeypatch):
    monkeypatch.setattr(common, "stderr", Console(file=io.StringIO(), force_terminal=True))
    with TrainingProgress() as progress:
        progress.status = "loss 0.5000  120 tok/s  ETA 2m"  # the last step's figures
        progress.sampling(5, 16)
        assert progress.bar is not None
        status = progress.bar.tasks[0].fields["status"]
    assert status == "loss 0.5000  120 tok/s  ETA 2m  sampling 5/16 answers"


def test_piped_sampling_prints_nothing(monkeypatch):
    output = io.StringIO()
    monkeypatch.setattr(common, "stderr", Console(file=output, force_terminal=False))
    with TrainingProgress() as progress:
        progress.sampling(5, 16)
    assert output.getvalue() == ""
