"""`tunelab demo`: the main job on the bundled sample data (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from tunelab.cli import common
from tunelab.cli.options import INT32_MAX, base_model_option, output_option
from tunelab.cli.progress import EvalProgress, TrainingProgress
from tunelab.cli.render import (
    render_format_report,
    render_training_result,
    render_validation_report,
)
from tunelab.cli.render_analysis import render_analysis
from tunelab.cli.render_eval import render_classify
from tunelab.demo import DEMO_TRAIN_STEPS, FineTune, run_demo


def _heading(text: str) -> None:
    # A rule is as wide as the console: a piped console is very wide, a heading is not.
    common.stdout.print(Rule(f"[bold]{text}[/]"), width=min(common.stdout.width, 100))


@click.command("demo")
@output_option(
    "Where the demo writes its files (its own earlier outputs there are replaced).",
    dest="output_dir",
    aliases=("--output-dir",),
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
)
@base_model_option()
@click.option(
    "--train-steps",
    type=click.IntRange(0, INT32_MAX),
    default=DEMO_TRAIN_STEPS,
    show_default=True,
    help="LoRA steps on the TREC sample (0 skips fine-tuning).",
)
def demo_cmd(output_dir: Path, model: str, train_steps: int) -> int:
    """Run the main job on the bundled sample data: format, validate, analyze, fine-tune, chat."""
    with TrainingProgress() as progress, EvalProgress(bars=False) as eval_progress:
        result = run_demo(
            output_dir,
            model=model,
            train_steps=train_steps,
            on_step=lambda text: _heading(text),
            on_progress=progress,
            eval_progress=eval_progress,
        )
    for run in result.datasets:
        _heading(f"{run.name}: format")
        render_format_report(run.formatted)
        _heading(f"{run.name}: validate")
        render_validation_report(run.validation)
        _heading(f"{run.name}: analyze")
        render_analysis(run.analysis)
    if result.fine_tune is not None:
        _render_fine_tune(result.fine_tune, output_dir)
    _heading("files")
    for path in sorted(output_dir.iterdir()):
        common.stdout.print(f"  {path}", highlight=False)
    return 0 if all(run.validation.ok for run in result.datasets) else 1


def _render_fine_tune(fine_tune: FineTune, output_dir: Path) -> None:
    _heading("trec: fine-tune (LoRA)")
    render_training_result(fine_tune.result, resume=f"tunelab demo --output {output_dir}")
    table = Table("held-out question", "expected", "fine-tuned model's answer", box=None)
    for answer in fine_tune.answers:
        table.add_row(escape(answer.question), escape(answer.expected), escape(answer.answer))
    common.stdout.print(table)
    if fine_tune.evaluation is not None:
        _heading("trec: base vs fine-tuned on the held-out questions")
        render_classify(fine_tune.evaluation)
