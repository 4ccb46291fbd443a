"""`--report-to tensorboard|trackio|wandb`: a training run's metrics, also sent to the
experiment tracker a team already uses. Each tracker is optional: asking for one that is not
installed is an error before any work starts, never a crash mid-run.

A reporter is an engine callback (it receives each step's metric record) with a `close()`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

from tunelab.errors import usage_error

REPORTERS = ("tensorboard", "trackio", "wandb")
_PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}
# The per-step numbers worth a chart; the rest of a record (epoch, tokens) stays in metrics.jsonl.
SCALARS = (
    "loss",
    "val_loss",
    "learning_rate",
    "grad_norm",
    "mean_token_accuracy",
    "val_mean_token_accuracy",
    "answer_accuracy",
    "val_answer_accuracy",
    "tokens_per_second",
)


def check_reporters(names: tuple[str, ...]) -> None:
    """Refuse a tracker that is unknown or whose package is not installed."""
    for name in names:
        if name not in REPORTERS:
            raise usage_error(
                "unknown_reporter", f"--report-to {name}: choose one of {', '.join(REPORTERS)}."
            )
        package = _PACKAGES[name]
        if package not in sys.modules and importlib.util.find_spec(package) is None:
            raise usage_error(
                "reporter_not_installed",
                f"--report-to {name} needs the {package} package, which is not installed.",
                hint=f"pip install {package}, or drop --report-to {name}",
            )


class Reporters:
    """The trackers asked for, fed each step's record; `close()` flushes them."""

    def __init__(self, names: tuple[str, ...], run_dir: Path, config: dict) -> None:
        check_reporters(names)
        self.sinks = [_open(name, Path(run_dir), config) for name in names]

    def __call__(self, record: dict) -> None:
        scalars = {k: float(record[k]) for k in SCALARS if isinstance(record.get(k), (int, float))}
        for sink in self.sinks:
            sink.log(scalars, record["step"])

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _open(name: str, run_dir: Path, config: dict):
    if name == "tensorboard":
        return _TensorBoard(run_dir / "tensorboard")
    return _WandbLike(importlib.import_module(name), run_dir, config)


class _TensorBoard:
    """Event files in `OUTPUT/tensorboard/`, made at the first step: the engine refuses an
    output directory that is not empty when a run starts, so nothing may be written before."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir, self.writer = log_dir, None

    def log(self, scalars: dict, step: int) -> None:
        if self.writer is None:
            # torch: only with --report-to tensorboard
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        for key, value in scalars.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class _WandbLike:
    """wandb and trackio share one API: init(project, name, config), log(dict, step), finish.
    What they print goes to stderr: tunelab's stdout is its result (`--json` must parse), and
    trackio prints its banner and dashboard hint to stdout."""

    def __init__(self, module, run_dir: Path, config: dict) -> None:
        self.module = module
        with contextlib.redirect_stdout(sys.stderr):
            self.run = module.init(project="tunelab", name=run_dir.name, config=config)

    def log(self, scalars: dict, step: int) -> None:
        self.module.log(scalars, step=step)

    def close(self) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            self.module.finish()
