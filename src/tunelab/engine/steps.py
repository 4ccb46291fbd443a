"""What the trainer reports after each optimizer step: one frozen `StepRecord`.

The trainer hands it to its callback (the CLI's progress bar, the worker's registry recorder,
the experiment trackers) and appends `as_metrics()` to `metrics.jsonl`. Dicts are for the
wire only: the registry's metrics JSON and the metrics file are made here, in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

# Validation figures are written only at the steps that validated.
_VALIDATION = ("val_loss", "val_mean_token_accuracy", "val_examples")
# Written only where the platform can read them (engine.memory).
_MEMORY = ("rss_mb", "peak_rss_mb")
# Said to the callback, never recorded as a metric: the run's length and where it saved.
_NOT_METRICS = ("total_steps", "checkpoint")


# A validation accuracy and the name it is reported under.
Accuracy = tuple[str, float]


@dataclass(frozen=True)
class StepRecord:
    step: int
    total_steps: int
    epoch: int
    loss: float
    # Supervised runs: the share of trained tokens the model predicts; None for DPO, whose
    # accuracy (pairs ranked right) is one of its `objective_metrics`.
    mean_token_accuracy: float | None
    learning_rate: float
    grad_norm: float
    tokens: int  # tokens in the step's batch
    trained_tokens: int  # of which the loss is computed over (assistant tokens)
    tokens_per_second: float  # over this session's steps
    threads: int  # the torch threads the step ran with
    elapsed: float  # seconds since the run began, earlier sessions of a resumed run included
    eta_seconds: float  # remaining steps and validation passes at this session's pace
    # The process's resident memory (MB) after the step, and the most it has held so far
    # (ru_maxrss: the step's peak once it is the highest yet); None where unreadable.
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    val_loss: float | None = None
    val_mean_token_accuracy: float | None = None
    val_examples: int | None = None
    checkpoint: Path | None = None  # the checkpoint saved after this step, if any
    # The training method's own figures, means over the step (supervised: answer_accuracy;
    # DPO: preference_accuracy, reward_margin, chosen_reward, rejected_reward), and over
    # validation (val_…).
    objective_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def validated(self) -> bool:
        return self.val_loss is not None

    def with_validation(
        self,
        loss: float,
        accuracy: Accuracy,
        examples: int,
        per_example: dict[str, float] | None = None,
    ) -> StepRecord:
        """The record with the validation pass's loss and accuracy (`accuracy` is named by
        the objective: mean_token_accuracy, or a method's own) and the objective's
        per-example rates (supervised: answer_accuracy), each recorded as `val_NAME`."""
        name, value = accuracy
        validated = {f"val_{key}": rate for key, rate in (per_example or {}).items()}
        if name == "mean_token_accuracy":
            return dataclasses.replace(
                self,
                val_loss=loss,
                val_mean_token_accuracy=value,
                val_examples=examples,
                objective_metrics={**self.objective_metrics, **validated},
            )
        metrics = {**self.objective_metrics, **validated, f"val_{name}": value}
        return dataclasses.replace(
            self, val_loss=loss, val_examples=examples, objective_metrics=metrics
        )

    def as_metrics(self) -> dict:
        """The step's metrics as JSON-ready numbers: `metrics.jsonl`'s line and the registry's
        metric (validation figures only where the step validated)."""
        metrics = {
            item.name: getattr(self, item.name)
            for item in dataclasses.fields(self)
            if item.name not in _NOT_METRICS
            and not (item.name in (*_VALIDATION, *_MEMORY) and getattr(self, item.name) is None)
        }
        if metrics["mean_token_accuracy"] is None:
            del metrics["mean_token_accuracy"]
        return {**metrics, **metrics.pop("objective_metrics")}
