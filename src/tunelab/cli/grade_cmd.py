"""`tunelab eval grade`: a grader (OpenAI's JSON) over a model's answers to reinforcement
items, or over recorded samples; recorded as an evaluation run like the others."""

from __future__ import annotations

import threading
from pathlib import Path

import click
from rich.markup import escape

from tunelab.cli import common
from tunelab.cli.cancel import KEEPING, ctrl_c_cancels
from tunelab.cli.options import (
    FilePath,
    data_option,
    input_file,
    json_option,
    limit_option,
    max_tokens_option,
    model_option,
    output_option,
)
from tunelab.cli.progress import EvalProgress
from tunelab.cli.render_eval import exit_code_of, scores_table
from tunelab.evals import candidates, runs
from tunelab.evals.grading import evaluate_grader, load_grade_data, write_grades
from tunelab.evals.result import EvaluationResult
from tunelab.io import check_output_path


@click.command("grade")
@click.option(
    "--grader",
    "grader_path",
    type=input_file,
    required=True,
    help="The grader: OpenAI's grader JSON (or tunelab's mongo_query, label_match).",
)
@data_option(
    "Reinforcement JSONL: messages ending with a user turn, and the fields the grader reads."
)
@model_option("The model that answers each item (any provider).")
@click.option(
    "--samples",
    "samples_path",
    type=input_file,
    help='Recorded answers instead of a model: {"output_text": ...} or {"output_json": ...} '
    "per line, in the items' order.",
)
@limit_option()
@max_tokens_option(256, "Longest answer the model writes.")
@output_option("Write every item's score, pass and error here (JSONL).", type=FilePath)
@click.option("--force", is_flag=True, help="Overwrite an existing --output.")
@json_option("Print the result as JSON.")
def grade_cmd(
    grader_path,
    data_path,
    model,
    samples_path,
    limit,
    max_tokens,
    output,
    force,
    as_json,
) -> int:
    """Grade each item's sample (a model's answer, or a recorded one): mean score, pass rate,
    sub-grader means and errors by kind. result.json and report.html go to
    TUNELAB_HOME/evals/<run id>/, as every evaluation's do."""
    if model and samples_path:
        raise click.UsageError("Can't provide both --model and --samples. Choose one.")
    if not model and not samples_path:
        raise click.UsageError("Give --model M (to answer the items) or --samples S.")
    if output is not None:
        check_output_path(output, force=force, inputs=(grader_path, data_path, samples_path))
    if model:
        candidates.check_models([model])  # a mistyped --model fails before the data is read
    data = load_grade_data(grader_path, data_path, limit)

    def compute(progress, cancel):
        return evaluate_grader(
            data,
            model=model,
            samples_path=samples_path,
            max_tokens=max_tokens,
            progress=progress,
            cancel=cancel,
        )

    options = {"grader": data.spec, "limit": limit}
    options |= {"max_tokens": max_tokens} if model else {"samples": str(samples_path)}
    name = model or str(samples_path)
    result = _recorded([name], data.describe(), options, compute, as_json)
    if output is not None:
        write_grades(output, [row.output for row in runs.run_outputs(result.id)])
    if as_json:
        common.print_json(result.to_dict())
    else:
        render_grades(result, output)
    return exit_code_of(result)


def _recorded(models, described, options, compute, as_json) -> EvaluationResult:
    cancel = threading.Event()
    with ctrl_c_cancels(cancel, KEEPING), EvalProgress(quiet=as_json) as progress:
        return runs.record_run(
            "grade",
            models=models,
            data=described,
            options=options,
            task=lambda: compute(progress, cancel),
        )


def render_grades(result: EvaluationResult, output: Path | None) -> None:
    """The scores table, each sub-grader's mean, the errors by kind, and where the files are."""
    grader = result.metrics.get("grader") or {}
    title = f"grader {escape(grader.get('name', ''))} ({grader.get('type', '')})"
    columns = ("answers", "graded", "mean score", "pass rate", "errors")
    rows = [
        (
            escape(name),
            f"{s['n_items']:,}",
            f"{s['mean_score']:.3f}",
            "—" if s["pass_rate"] is None else f"{s['pass_rate']:.1%}",
            f"{s['n_errors']:,}",
        )
        for name, s in result.scores.items()
    ]
    common.stdout.print(scores_table(f"{title}: {result.data['n_items']:,} items", columns, rows))
    for s in result.scores.values():
        for sub, mean in s["sub_scores"].items():
            shown = "—" if mean is None else f"{mean:.3f}"
            common.stdout.print(f"  {escape(sub)}: mean {shown}", highlight=False)
        for kind, count in s["errors_by_kind"].items():
            common.stderr.print(f"[yellow]{escape(kind)}[/]: {count:,} item(s)", highlight=False)
    if output is not None:
        common.stdout.print(f"per-item results: {escape(str(output))}", highlight=False)
    common.stdout.print(f"run {result.id}: {escape(result.html_path or '')}", highlight=False)
