"""An evaluation's result in the terminal, by kind (classification, queries, judge), and the
exit code it earns; shown by `tunelab eval`, `tunelab demo` and `tunelab migrate openai
compare`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.markup import escape
from rich.table import Table

from tunelab.cli import common
from tunelab.cli.cancel import EXIT_INTERRUPTED
from tunelab.errors import TunelabError
from tunelab.evals import runs
from tunelab.evals.result import EvaluationResult, partial_message


def show_evaluation(result: EvaluationResult, as_json: bool) -> int:
    """The result as JSON or as its kind's table; then the exit code it earns."""
    if as_json:
        common.print_json(result.to_dict())
    else:
        render_evaluation(result)
    return exit_code_of(result)


def exit_code_of(result: EvaluationResult) -> int:
    """0; 130 when Ctrl-C stopped the run part-way (what was scored is kept and said); 1
    with the reason on stderr when the run produced no score at all."""
    if result.partial and not result.error:
        said = partial_message(result.partial)
        common.stderr.print(
            f"[yellow]interrupted:[/] {escape(said)}; the partial results are "
            f"in {escape(result.json_path or '')}",
            highlight=False,
        )
        return EXIT_INTERRUPTED
    if not result.error:
        return 0
    hint = f"the run and its reasons: {result.json_path}"
    common.print_error(TunelabError("nothing_scored", result.error, hint=hint))
    return 1


def scores_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], names=1
) -> Table:
    """One row a model (or answer set): the first `names` columns say what it is, left-aligned;
    the figures follow, right-aligned."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < names else "right")
    for row in rows:
        table.add_row(*row)
    return table


def render_classify(result: EvaluationResult) -> None:
    columns = ("model", "method", "accuracy", "macro-F1", "invalid", "answers/s")
    rows = [_classify_row(name, m) for name, m in result.scores.items()]
    title = f"classification: {result.data['n_items']:,} items"
    common.stdout.print(scores_table(title, columns, rows, names=2))
    for name, m in result.scores.items():
        if m.get("note"):
            common.stderr.print(f"note: {escape(name)}: {escape(m['note'])}", highlight=False)
    for comparison in result.metrics.get("comparisons", []):
        diff, (low, high) = comparison["difference"], comparison["difference_ci"]
        common.stdout.print(
            f"{escape(comparison['model'])} vs {escape(comparison['baseline'])}: accuracy "
            f"{diff:+.1%} [{low:+.1%}, {high:+.1%}], McNemar p = {comparison['p_value']:.3g}",
            highlight=False,
        )
    _say_files(result)


def _classify_row(name: str, m: dict) -> tuple[str, ...]:
    low, high = m.get("accuracy_ci", (None, None))
    interval = f" [{low:.1%}–{high:.1%}]" if low is not None else ""
    method = m.get("method", "generate")
    method += f" ({m['normalize']})" if method == "score" else ""
    accuracy = f"{m['accuracy']:.1%}{interval}"
    speed = _num(m.get("answers_per_second"))
    return (escape(name), method, accuracy, f"{m['macro_f1']:.3f}", _pct(m["invalid_rate"]), speed)


def render_queries(result: EvaluationResult) -> None:
    columns = ("model", "exact", "structural", "execution", "parse failures", "answers/s")
    rows = [
        (
            escape(name),
            *(_pct(m[key]) for key in ("exact_match", "structural_match", "execution_match")),
            _pct(m["parse_failure_rate"]),
            _num(m.get("answers_per_second")),
        )
        for name, m in result.scores.items()
    ]
    title = f"NL → MongoDB: {result.data['n_items']:,} items"
    common.stdout.print(scores_table(title, columns, rows))
    for note in result.metrics.get("notes", [])[:5]:
        common.stderr.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    _say_files(result)


def render_tools(result: EvaluationResult) -> None:
    columns = ("model", "right function", "valid arguments", "exact", "no call", "answers/s")
    rates = ("function_match", "arguments_valid", "exact_match", "no_call_rate")
    rows = [
        (escape(name), *(_pct(m[key]) for key in rates), _num(m.get("answers_per_second")))
        for name, m in result.scores.items()
    ]
    title = f"tool calls: {result.data['n_items']:,} items"
    common.stdout.print(scores_table(title, columns, rows))
    _say_files(result)


def render_judge(result: EvaluationResult, outputs: list[dict] | None = None) -> None:
    """Every rating or score with its 95% interval, then every parse failure with its reason.
    `outputs` are the run's stored rows (read from the registry when not given)."""
    if outputs is None:
        outputs = [row.to_dict() for row in runs.run_outputs(result.id)]
    m = result.metrics
    if "traits" not in m:  # cancelled while the candidates answered
        common.stdout.print("nothing judged: cancelled before the first verdict")
    elif result.kind == "pairwise" and not m.get("ratings"):
        common.stdout.print(
            f"pairwise: no ratings from {m['n_comparisons']} comparisons "
            f"({m['n_verdicts']} decided)",
            highlight=False,
        )
    else:
        common.stdout.print(
            _ratings_table(result) if result.kind == "pairwise" else _scores_table(result)
        )
    if m.get("note"):
        common.stdout.print(f"note: {escape(m['note'])}", highlight=False)
    print_parse_failures(outputs)
    _say_errors(result)
    _say_files(result)


def _ratings_table(result: EvaluationResult) -> Table:
    title = (
        f"pairwise ratings ({result.metrics['n_prompts']} prompts, judge "
        f"{escape(result.metrics['judge'])})"
    )
    rated = [(name, s) for name, s in result.scores.items() if "rating" in s]
    rows = [
        (
            escape(name),
            f"{s['rating']:.0f}",
            f"{s['low']:.0f} – {s['high']:.0f}",
            f"{s['wins']:g} / {s['games']}",
        )
        for name, s in sorted(rated, key=lambda kv: -kv[1]["rating"])
    ]
    return scores_table(title, ("model", "rating", "95% interval", "wins / games"), rows)


def _scores_table(result: EvaluationResult) -> Table:
    traits = result.metrics["traits"]
    title = f"judge {escape(result.metrics['judge'])}: scores 1–10 (95% interval)"
    columns = ("model", "items", *traits, "mean", "parse failures", "failed calls")
    return scores_table(
        title, columns, (_judge_row(name, s, traits) for name, s in result.scores.items())
    )


def _judge_row(name: str, s: dict, traits: list[str]) -> tuple[str, ...]:
    intervals = s.get("intervals") or {}
    return (
        escape(name),
        f"{s['n_scored']}/{s['n']}",
        *(_score(s["traits"].get(t), intervals.get(t)) for t in traits),
        _score(s["mean_score"], s.get("mean_interval")),
        str(s["n_parse_failures"]),
        str(s.get("n_call_failures", 0)),
    )


def _say_errors(result: EvaluationResult) -> None:
    per_model = result.metrics.get("models") or {}
    errors = result.metrics.get("errors") or [
        e for s in per_model.values() for e in s.get("errors", [])
    ]
    for error in errors:
        common.stderr.print(f"[yellow]judge failure:[/] {escape(error)}", highlight=False)


def print_parse_failures(outputs: list[dict]) -> None:
    """Each judge verdict that could not be read: the model, the item and why."""
    failed = [row for row in outputs if (row.get("output") or {}).get("parse_failure")]
    if not failed:
        return
    common.stdout.print(f"judge parse failures ({len(failed)}):", highlight=False)
    for row in failed:
        output = row["output"]
        where = (
            f"{row['model']}, item {row['item'] + 1}"
            if "a" not in output
            else (f"item {output.get('item', row['item']) + 1}, {output['a']} vs {output['b']}")
        )
        reason = output.get("error") or "the verdict could not be read"
        common.stdout.print(f"  {escape(where)}: {escape(reason)}", highlight=False)


def _say_files(result: EvaluationResult) -> None:
    common.stdout.print(f"run {result.id}: {escape(result.html_path or '')}", highlight=False)


def _pct(rate) -> str:
    return "—" if rate is None else f"{rate:.1%}"


def _num(value) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _score(value, interval=None) -> str:
    if value is None:
        return "—"
    if not interval:
        return f"{value:.2f}"
    return f"{value:.2f} ({interval[0]:.1f}–{interval[1]:.1f})"


def render_evaluation(result: EvaluationResult) -> None:
    """The table of the result's kind."""
    render = {
        "classify": render_classify,
        "queries": render_queries,
        "tools": render_tools,
    }.get(result.kind, render_judge)
    render(result)
