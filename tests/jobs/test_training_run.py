"""`tunelab train` and the worker drive the same training run object (engine/run.py)."""

from __future__ import annotations

import threading
from typing import ClassVar

import pytest
from click.testing import CliRunner

from tunelab.cli import cli
from tunelab.engine import run as run_module
from tunelab.engine.trainer import TrainResult
from tunelab.providers.local.artifacts import JobWorkspace
from tunelab.providers.local.training import ProgressRecorder, train_here
from tunelab.registry import Store


class RecordedRun(run_module.TrainingRun):
    """The real run object, set up and trained without a model: it records who drove it."""

    driven: ClassVar[list[RecordedRun]] = []

    def setup(self) -> RecordedRun:
        self.check_output()
        self.info = self.source
        self.base = self.tokenizer = object()
        return self

    def train(self) -> TrainResult:
        self.driven.append(self)
        return TrainResult(
            status="succeeded",
            output_dir=self.output_dir,
            step=1,
            total_steps=1,
            train_loss=1.0,
            val_loss=None,
            val_mean_token_accuracy=None,
            val_answer_accuracy=None,
            tokens_per_second=None,
            elapsed_seconds=0.1,
            last_checkpoint=None,
            resumed_from_step=None,
            dataset={},
        )


@pytest.fixture
def driven(monkeypatch) -> list[RecordedRun]:
    monkeypatch.setattr(run_module, "TrainingRun", RecordedRun)
    monkeypatch.setattr(RecordedRun, "driven", [])
    return RecordedRun.driven


def test_tunelab_train_drives_the_run_object(driven, tiny_model_dir, train_file, tmp_path):
    output = tmp_path / "run"
    args = [
        "train",
        "--train",
        str(train_file),
        "--model",
        str(tiny_model_dir),
        "--output",
        str(output),
        "--batch-size",
        "4",
        "--resume",
    ]
    (output / "checkpoints" / "step-00000001").mkdir(parents=True)  # not complete: refused
    refused = CliRunner().invoke(cli, args)
    assert getattr(refused.exception, "code", None) == "nothing_to_resume"
    assert driven == []  # the run checked its output before loading anything

    done = CliRunner().invoke(cli, [*args[:-1], "--force"])
    assert done.exit_code == 0, done.output
    (run,) = driven
    assert (run.train_data, run.output_dir, run.force, run.need_checkpoint) == (
        train_file,
        output,
        True,
        True,
    )
    assert run.config.batch_size == 4 and run.metadata["train_file"] == str(train_file)
    assert callable(run.callback) and not isinstance(run.callback, ProgressRecorder)


def test_the_worker_drives_the_run_object(driven, create_job):
    job = create_job("--n-epochs", "1")
    with Store() as store:
        workspace = JobWorkspace.of(store.get_job(job["id"]))
        row = workspace.job
        result = train_here(store, workspace, threading.Event())
        events = [event.message for event in store.list_events(row.id)]
    (run,) = driven
    assert result.status == "succeeded" and run.output_dir == workspace.directory
    assert run.resume and not run.need_checkpoint  # a retried job continues where it stopped
    assert run.config.batch_size == 4 and run.metadata["job_id"] == row.id
    assert isinstance(run.callback, ProgressRecorder)
    assert any(message.startswith("Loaded base model") for message in events)
