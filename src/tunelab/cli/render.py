"""What several commands print: data reports, validation findings, a training result, and
the small formats (durations, times, model names) they share."""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from tunelab.catalog import converts_bundled_tokenizer
from tunelab.cli import common
from tunelab.curves import METRICS_FILE, read_metrics
from tunelab.data.formatter import FormatReport
from tunelab.data.validate import ERROR, ValidationReport
from tunelab.run_advice import more_training_advice

LINES_SHOWN = 5


def say(text: str) -> None:
    """One line of markup on stdout; numbers are not recoloured."""
    common.stdout.print(text, highlight=False)


def say_waiting(what: str) -> None:
    """On stderr (stdout is the result's, `--json` included): what the wait that follows is
    spent on, before a silent minute makes the command look stuck."""
    common.stderr.print(what + "…", highlight=False)


def say_if_converting_tokenizer(model: str | None) -> None:
    """Announce the bundled tokenizer's one-time conversion when counting tokens for `model`
    is about to start it."""
    if converts_bundled_tokenizer(model):
        say_waiting(
            "converting the bundled model's tokenizer to a Hugging Face directory "
            "(once, about 30 s)"
        )


def duration(seconds: float | None) -> str:
    """H:MM:SS, or M:SS under an hour; a dash when unknown."""
    if seconds is None:
        return "—"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def when(stamp: int | None, short: bool = False) -> str:
    """A Unix time in local time; `short` leaves out the year and the seconds."""
    if not stamp:
        return "—"
    moment = datetime.fromtimestamp(stamp, timezone.utc).astimezone()
    return moment.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S")


def short_name(model: str | None) -> str:
    """A base model as a reader knows it: a directory by its name, a Hub id as is."""
    if not model:
        return ""
    return Path(model).name if model.startswith(("/", "./", "~")) else model


def listing_table(key: str, *columns: str) -> Table:
    """The table of a listing command: its key column (an id, a name) never wraps, so it can
    be copied whole; the other columns fold."""
    table = Table()
    table.add_column(key, no_wrap=True)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def print_listing(columns: tuple[str, ...], rows: list[tuple], empty: str | None = None) -> int:
    """A listing command's rows on stdout as a `listing_table`, or the line `empty` when
    there are none (an empty table without it); the command's exit status."""
    if not rows and empty is not None:
        common.stdout.print(empty)
        return 0
    table = listing_table(*columns)
    for row in rows:
        table.add_row(*row)
    common.stdout.print(table)
    return 0


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


def render_validation_report(report: ValidationReport) -> None:
    train = report.train
    target = f" for {report.model.name}" if report.model else ""
    say(f"[bold]{train.path}[/]: {train.n_examples:,} examples, {train.n_valid:,} valid{target}")
    if report.method != "supervised" or report.method_detection:
        how = f"detected: {report.method_detection}" if report.method_detection else "given"
        say(f"format: {report.method} ({escape(how)})")
    if report.val is not None:
        val = report.val
        say(f"[bold]{val.path}[/]: {val.n_examples:,} examples, {val.n_valid:,} valid")
    table = findings_table(report)
    if table is not None:
        common.stdout.print(table)
    for note in report.notes:
        say(f"[dim]note: {note}[/]")
    print_verdict(report)


def render_format_report(report: FormatReport) -> None:
    how = f"detected: {report.detection}" if report.detection else "given"
    common.stdout.print(
        f"[bold]{escape(report.source)}[/]: {report.kind} ({escape(how)})", highlight=False
    )
    fields = ", ".join(
        f"{meaning}={name}" + (" (detected)" if meaning in report.detected_fields else "")
        for meaning, name in report.fields.items()
    )
    common.stdout.print(f"  fields: {escape(fields)}", highlight=False)
    common.stdout.print(
        f"  system prompt: {escape(report.system or '(none added)')}", highlight=False
    )
    if report.to == "reinforcement":
        field = escape(report.reference_field or "")
        common.stdout.print(f"  written as reinforcement items (answer → {field})")
    common.stdout.print(f"  read {report.n_read:,} examples", highlight=False)
    if report.n_skipped:
        common.stdout.print(f"  skipped {report.n_skipped:,} without an assistant message")
    if report.n_duplicates:
        pairs = ", ".join(f"{d['line']} = {d['duplicate_of']}" for d in report.duplicates_sample)
        common.stdout.print(
            f"  removed {report.n_duplicates:,} exact duplicates (line = first copy: {pairs}"
            + (", ..." if report.n_duplicates > len(report.duplicates_sample) else "")
            + ")",
            highlight=False,
        )
    common.stdout.print(
        f"  [green]train[/] {report.n_train:,} → {escape(report.train_output)}", highlight=False
    )
    if report.val_output:
        common.stdout.print(
            f"  [green]val[/]   {report.n_val:,} → {escape(report.val_output)}", highlight=False
        )
    for path in report.label_set_outputs or []:
        common.stdout.print(f"  [green]labels[/] → {escape(path)}", highlight=False)
    if report.label_counts:
        table = Table("label", "train", "val", box=None, padding=(0, 2))
        for label, n in report.label_counts["train"].items():
            table.add_row(escape(label), f"{n:,}", f"{report.label_counts['val'].get(label, 0):,}")
        common.stdout.print(table)


def render_training_result(result, resume: str) -> None:
    say = common.stdout.print
    speed = f", {result.tokens_per_second:,.0f} tokens/s" if result.tokens_per_second else ""
    losses = f"train loss {result.train_loss:.4f}" if result.train_loss is not None else "no step"
    if result.val_loss is not None:
        losses += f", val loss {result.val_loss:.4f}" + validation_accuracies(result)
    took = duration(result.elapsed_seconds)
    if result.status == "cancelled":
        say(
            f"[yellow]cancelled[/] at step {result.step}/{result.total_steps}: {losses}",
            highlight=False,
        )
        say(f"  checkpoint: {escape(str(result.last_checkpoint))}", highlight=False)
        say(f"  resume with: {escape(resume)}", highlight=False)
        return
    say(f"[green]✓ trained[/] {result.step} steps in {took}: {losses}{speed}", highlight=False)
    say(f"  output: {escape(str(result.output_dir))}", highlight=False)
    chat = f"tunelab chat {shlex.quote(str(result.output_dir))}"
    say(f"  chat with it: {escape(chat)}", highlight=False)
    advice = more_training_advice(read_metrics(result.output_dir / METRICS_FILE))
    if advice is not None:
        say(f"  [yellow]note:[/] {escape(advice)}", highlight=False)


def validation_accuracies(result) -> str:
    """The last validation's accuracies: whole answers right first (what an evaluation will
    find), then tokens right (inflated by a task's easy template tokens)."""
    parts = []
    if result.val_answer_accuracy is not None:
        parts.append(f"answers right {result.val_answer_accuracy:.1%}")
    if result.val_mean_token_accuracy is not None:
        parts.append(f"tokens right {result.val_mean_token_accuracy:.1%}")
    return f" ({', '.join(parts)})" if parts else ""
