"""`tunelab validate`: every defect of a chat JSONL file, grouped; exit 1 on any error."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tunelab.cli import common
from tunelab.data.validate import ERROR, ValidationReport, validate_file

LINES_SHOWN = 5

input_file = click.Path(exists=True, dir_okay=False, path_type=Path)


def say(text: str) -> None:
    """One line of markup on stdout; numbers are not recoloured."""
    common.stdout.print(text, highlight=False)


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


def findings_table(report: ValidationReport) -> Table | None:
    """Findings grouped per file and code: count, first lines, first message."""
    groups: dict[tuple, list] = {}
    for finding in report.findings:
        groups.setdefault((finding.file, finding.code), []).append(finding)
    if not groups:
        return None
    table = Table(show_edge=False, pad_edge=False)
    for name in ("", "code", "count", "lines", "first message"):
        table.add_column(name, justify="right" if name == "count" else "left")
    counts = {scan.label: scan.counts for scan in report.scans}
    order = sorted(groups, key=lambda k: (groups[k][0].severity != ERROR, -counts[k[0]][k[1]]))
    for file, code in order:
        found = groups[(file, code)]
        severity = found[0].severity
        mark = "[red]error[/]" if severity == ERROR else "[yellow]warning[/]"
        table.add_row(mark, code, f"{counts[file][code]:,}", _lines(found, file), found[0].message)
    return table


def _lines(found: list, file: str | None) -> str:
    numbers = [str(f.line) for f in found if f.line is not None][:LINES_SHOWN]
    more = len([f for f in found if f.line is not None]) - len(numbers)
    text = ", ".join(numbers) + (f" +{more:,}" if more > 0 else "")
    return f"{Path(file).name}: {text}" if file and text else text or "—"


def print_verdict(report: ValidationReport) -> None:
    warnings = f"{report.n_warnings:,} warning(s)"
    if report.ok:
        say(f"[green]✓ no errors[/] ({warnings})")
    else:
        say(f"[red]✗ {report.n_errors:,} error(s)[/], {warnings}")
    if report.n_omitted:
        say(f"[dim]{report.n_omitted:,} findings not listed (see --json)[/]")


def render_report(report: ValidationReport) -> None:
    train = report.train
    target = f" for {report.model.name}" if report.model else ""
    say(f"[bold]{train.path}[/]: {train.n_examples:,} examples, {train.n_valid:,} valid{target}")
    if report.val is not None:
        val = report.val
        say(f"[bold]{val.path}[/]: {val.n_examples:,} examples, {val.n_valid:,} valid")
    table = findings_table(report)
    if table is not None:
        common.stdout.print(table)
    for note in report.notes:
        say(f"[dim]note: {note}[/]")
    print_verdict(report)


@click.command("validate")
@click.argument("file", type=input_file)
@click.option("--val", "val_file", type=input_file, help="Validation file to check as well.")
@click.option(
    "--model",
    "-m",
    help="Target model (name, alias or local Hugging Face directory): adds the context-length, "
    "provider-minimum and tokenizer special-token checks.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def validate_cmd(file: Path, val_file: Path | None, model: str | None, as_json: bool) -> int:
    """Check a chat fine-tuning JSONL file; exit 1 if it has errors."""
    with reading_progress() as progress:
        report = validate_file(file, val_path=val_file, model=model, progress=progress)
    if as_json:
        common.print_json(report.to_dict())
    else:
        render_report(report)
    return 0 if report.ok else 1
