"""What the trainer reports after each optimizer step: one frozen `StepRecord`.

The trainer hands it to its callback (the CLI's progress bar, the worker's registry recorder,
the experiment trackers) and appends `as_metrics()` to `metrics.jsonl`. Dicts are for the
wire only: the registry's metrics JSON and the metrics file are made here, in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

# Validation figures are written only at the steps that validated.
_VALIDATION = ("val_loss", "val_mean_token_accuracy", "val_examples")
# Said to the callback, never recorded as a metric: the run's length and where it saved.
_NOT_METRICS = ("total_steps", "checkpoint")


@dataclass(frozen=True)
class StepRecord:
    step: int
    total_steps: int
    epoch: int
    loss: float
    mean_token_accuracy: float
    learning_rate: float
    grad_norm: float
    tokens: int  # tokens in the step's batch
    trained_tokens: int  # of which the loss is computed over (assistant tokens)
    tokens_per_second: float  # over this session's steps
    threads: int  # the torch threads the step ran with
    elapsed: float  # seconds since the run began, earlier sessions of a resumed run included
    eta_seconds: float  # remaining steps and validation passes at this session's pace
    val_loss: float | None = None
    val_mean_token_accuracy: float | None = None
    val_examples: int | None = None
    checkpoint: Path | None = None  # the checkpoint saved after this step, if any

    @property
    def validated(self) -> bool:
        return self.val_loss is not None

    def with_validation(self, loss: float, accuracy: float, examples: int) -> StepRecord:
        return dataclasses.replace(
            self, val_loss=loss, val_mean_token_accuracy=accuracy, val_examples=examples
        )

    def as_metrics(self) -> dict:
        """The step's metrics as JSON-ready numbers: `metrics.jsonl`'s line and the registry's
        metric (validation figures only where the step validated)."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in _NOT_METRICS
            and not (field.name in _VALIDATION and getattr(self, field.name) is None)
        }
