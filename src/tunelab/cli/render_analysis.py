"""`tunelab analyze`'s report in the terminal (also shown by `tunelab demo`): the summary,
the per-example distributions, the detected task's facts and the costs elsewhere."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from tunelab.cli import common
from tunelab.cli.render import say
from tunelab.data.analyze import DISTRIBUTIONS, FileAnalysis

COSTS_SHOWN = 8


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
