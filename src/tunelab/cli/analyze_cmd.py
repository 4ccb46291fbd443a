"""`tunelab analyze`: tokens, distributions, epochs, billed tokens and cost of a dataset."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from tunelab.catalog import DEFAULT_MODEL
from tunelab.cli import common
from tunelab.cli.validate_cmd import input_file, reading_progress, say
from tunelab.data.analyze import DISTRIBUTIONS, FileAnalysis, analyze_file
from tunelab.data.report_html import render_html
from tunelab.io import atomic_write_text, check_output_path

COSTS_SHOWN = 8


def _n(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.4f}" if 0 < value < 0.01 else f"${value:,.2f}"


def _summary_table(a: FileAnalysis) -> Table:
    table = Table(show_header=False, show_edge=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    seconds = a.estimated_train_seconds
    rows = [
        ("examples", _n(a.n_examples)),
        ("invalid examples (left out)", _n(a.n_invalid_examples)),
        ("total tokens", _n(a.total_tokens)),
        ("context limit", _n(a.context_limit)),
        ("over the context", _n(a.n_over_context)),
        ("without a system message", _n(a.n_missing_system)),
        ("without a user message", _n(a.n_missing_user)),
        ("recommended epochs", _n(a.n_epochs)),
        ("billed tokens", _n(a.billed_tokens)),
        ("estimated cost", _usd(a.estimated_cost_usd)),
        ("estimated training time", "—" if seconds is None else f"{seconds / 60:,.1f} min"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _distributions_table(distributions: dict) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("per example")
    for name in ("min", "p5", "median", "mean", "p95", "max"):
        table.add_column(name, justify="right")
    for key in DISTRIBUTIONS:
        d = distributions[key]
        label = key.removesuffix("_per_example").replace("_", " ")
        table.add_row(
            label, *(_n(d[name]) for name in ("min", "p5", "median", "mean", "p95", "max"))
        )
    return table


def _costs_table(a: FileAnalysis) -> Table:
    table = Table(show_edge=False, pad_edge=False, title="the same billed tokens elsewhere")
    for name in ("provider", "model", "method", "$/1M tokens", "cost"):
        table.add_column(name, justify="right" if name in ("$/1M tokens", "cost") else "left")
    costs = sorted(a.costs, key=lambda c: c["estimated_cost_usd"])
    # the cheapest few, and always the target model's own line
    shown = [c for i, c in enumerate(costs) if i < COSTS_SHOWN or c["model"] == a.model]
    for c in shown:
        style = "bold cyan" if c["model"] == a.model else None
        row = (c["provider"], c["model"], c["method"], _usd(c["usd_per_million"]))
        table.add_row(*row, _usd(c["estimated_cost_usd"]), style=style)
    return table


def render_analysis(a: FileAnalysis) -> None:
    counts = "exact" if a.exact_counts else "approximate"
    say(
        f"[bold]{a.file}[/] for [bold]{a.model}[/] ({a.provider}; "
        f"{a.tokenizer} tokenizer, {counts} counts)"
    )
    common.stdout.print(_summary_table(a))
    common.stdout.print(_distributions_table(a.distributions))
    validation = a.validation
    errors = validation["n_errors"]
    verdict = f"[red]{errors:,} error(s)[/]" if errors else "[green]no errors[/]"
    codes = ", ".join(f"{code} {n:,}" for code, n in validation["by_code"].items())
    say(
        f"validation: {verdict}, {validation['n_warnings']:,} warning(s)"
        + (f" ({codes})" if codes else "")
    )
    task = a.task or {}
    if task.get("kind"):
        say(f"task: [bold]{task['kind']}[/]")
        for line in _task_lines(task):
            say(f"  {line}")
        for note in task.get("notes") or []:
            say(f"  [yellow]•[/] {note}")
    if a.costs:
        common.stdout.print(_costs_table(a))
    val = a.val
    if val is not None:
        say(
            f"[bold]{val.file}[/] (validation): {_n(val.n_examples)} examples, "
            f"{_n(val.total_tokens)} tokens, {_n(val.n_over_context)} over the context"
        )
    for note in a.notes:
        say(f"[dim]note: {note}[/]")


def _top(counts: dict, n: int = 8) -> str:
    return ", ".join(f"{escape(str(k))} {v:,}" for k, v in list(counts.items())[:n])


def _spread(d: dict) -> str:
    return f"min {d['min']}, mean {d['mean']}, max {d['max']}" if d.get("n") else "—"


def _task_lines(task: dict) -> list[str]:
    """The facts that matter for the detected kind of task, one line each."""
    kind = task["kind"]
    if kind == "queries":
        q = task["queries"]
        return [
            f"query types: {_top(q['by_type'])} (unreadable {q['unreadable_share']:.1%})",
            f"top operators: {_top(q['operators'])}",
            f"pipeline stages: {_spread(q['pipeline_length'])}; nesting depth: "
            f"{_spread(q['depth'])}",
            f"collections: {q['n_distinct_collections']:,} distinct; "
            f"top: {_top(q['collections'], 5)}",
        ]
    if kind == "classification":
        c = task["classification"]
        shares = ", ".join(
            f"{escape(x['label'])} {x['count']:,} ({x['share']:.0%})" for x in c["labels"]
        )
        return [
            f"{c['n_labels']} labels: {shares}",
            f"imbalance (largest/smallest): {c['imbalance_ratio']}; majority-class accuracy: "
            f"{c['majority_baseline_accuracy']:.1%}",
        ]
    if kind == "conversations":
        t = task["conversations"]
        return [
            f"user turns per conversation: {_spread(t['user_turns'])}",
            f"with a system message: {t['system_share']:.0%}; distinct system prompts: "
            f"{t['n_distinct_system_prompts']:,}",
        ]
    return []


@click.command("analyze")
@click.argument("file", type=input_file)
@click.option("--val", "val_file", type=input_file, help="Validation file to analyze as well.")
@click.option(
    "--model",
    "-m",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Target model (name, alias or local Hugging Face directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write an HTML report.")
@click.option("--prices", type=input_file, help="Price table (JSON) merged over the shipped one.")
@click.option("--force", is_flag=True, help="Overwrite an existing --html file.")
def analyze_cmd(
    file: Path,
    val_file: Path | None,
    model: str,
    as_json: bool,
    html_path: Path | None,
    prices: Path | None,
    force: bool,
) -> int:
    """Count tokens, recommend epochs and estimate the cost of fine-tuning on a dataset."""
    inputs = (file,) if val_file is None else (file, val_file)
    if html_path is not None:
        check_output_path(html_path, force=force, inputs=inputs)
    with reading_progress() as progress:
        analysis = analyze_file(
            file, val_path=val_file, model=model, prices=prices, progress=progress
        )
    if html_path is not None:
        atomic_write_text(html_path, render_html(analysis))
    if as_json:
        common.print_json(analysis.to_json())
    else:
        render_analysis(analysis)
        if html_path is not None:
            say(f"report: {html_path}")
    return 0
