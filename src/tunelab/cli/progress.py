"""Progress on stderr for long work: reading files, training steps, evaluation answers.

Bars on a terminal; when stderr is a pipe or a log, a few plain lines instead (or none).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tunelab.cli import common
from tunelab.cli.render import duration, say_if_converting_tokenizer

if TYPE_CHECKING:  # the engine's step record is only annotated here
    from tunelab.engine.steps import StepRecord


def count_bar(label: str, after: ProgressColumn) -> Progress:
    """A bar on stderr that leaves no trace: `label`, the bar, `done/total`, then `after`."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        after,
        console=common.stderr,
        transient=True,
    )


@contextlib.contextmanager
def reading_progress() -> Iterator[Callable[[str, int], None] | None]:
    """A progress bar per file on stderr (bytes read, speed, ETA), only on a terminal."""
    if not common.stderr.is_terminal:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=common.stderr, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(path: str, done: int) -> None:
            if path not in tasks:
                size = os.path.getsize(path)
                tasks[path] = bar.add_task(f"reading {Path(path).name}", total=size)
            bar.update(tasks[path], completed=done)

        yield update


@contextlib.contextmanager
def token_counting_progress(model: str | None) -> Iterator[Callable[[str, int], None] | None]:
    """`reading_progress` for reading files while counting `model`'s tokens. Counting the
    bundled model's tokens first converts its tokenizer, a silent half-minute: said first."""
    say_if_converting_tokenizer(model)
    with reading_progress() as progress:
        yield progress


class TrainingProgress:
    """A progress bar on stderr (step, loss, tokens/s, ETA); a line every ~5% when not a TTY."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task = None
        self.status = ""
        self.validation = ""  # the last validation's figures, shown until the next one

    def __enter__(self) -> TrainingProgress:
        if common.stderr.is_terminal and not self.quiet:
            self.bar = count_bar("training", TextColumn("{task.fields[status]}"))
            self.bar.start()
            self.task = self.bar.add_task("train", total=None, status="")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def validating(self, done: int, total: int) -> None:
        """The engine's `on_validation`: validation batches are progress too."""
        if self.bar is not None:
            self.bar.update(self.task, status=f"{self.status}  validating {done}/{total}")
        elif not self.quiet and done == 1:
            common.stderr.print(f"validating ({total:,} batches)…", highlight=False)

    def sampling(self, done: int, total: int) -> None:
        """The engine's `on_sampling`: a reinforcement step's answers as they finish (on a
        terminal only: piped, a line per step would drown the step lines)."""
        if self.bar is not None:
            self.bar.update(self.task, status=f"{self.status}  sampling {done}/{total} answers")

    def __call__(self, record: StepRecord) -> None:
        step, total = record.step, record.total_steps
        if record.validated:
            self.validation = f"  val {record.val_loss:.4f}" + validation_answers(record)
        status = (
            f"loss {record.loss:.4f}"
            + self.validation
            + f"  {record.tokens_per_second:,.0f} tok/s  ETA {duration(record.eta_seconds)}"
        )
        self.status = status
        if self.bar is not None:
            self.bar.update(self.task, completed=step, total=total, status=status)
        elif not self.quiet and (step % max(1, total // 20) == 0 or step == total):
            common.stderr.print(f"step {step}/{total}  {status}", highlight=False)


def validation_answers(record: StepRecord) -> str:
    """A validated step's answer accuracy (whole answers right; supervised runs only)."""
    answers = record.objective_metrics.get("val_answer_accuracy")
    return f"  val answers {answers:.0%}" if answers is not None else ""


class EvalProgress:
    """One progress bar per model (answers done, ETA) on stderr; quiet when not a terminal."""

    def __init__(self, quiet: bool = False, bars: bool = True) -> None:
        self.bar, self.quiet = None, quiet
        # `bars=False` prints one line per model instead: for callers that already show a
        # live display (rich allows one at a time).
        if common.stderr.is_terminal and not quiet and bars:
            self.bar = count_bar("{task.description}", TimeRemainingColumn())

    def __enter__(self) -> EvalProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, name: str, total: int):
        """A callback advancing the bar of model `name` by the answers just finished."""
        if self.bar is None:
            if not self.quiet:
                common.stderr.print(f"evaluating {name} on {total:,} items…", highlight=False)
            return None
        task = self.bar.add_task(escape(name), total=total)
        return lambda n: self.bar.advance(task, n)
