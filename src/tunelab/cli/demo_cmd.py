"""`tunelab demo`: the main job on the bundled sample data (what `make demo` runs)."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.catalog import DEFAULT_MODEL
from tunelab.cli import common
from tunelab.cli.analyze_cmd import render_analysis
from tunelab.cli.format_cmd import render_format_report
from tunelab.cli.validate_cmd import render_report
from tunelab.demo import run_demo


def _heading(text: str) -> None:
    common.stdout.rule(f"[bold]{text}[/]")


@click.command("demo")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Where the demo writes its files (its own earlier outputs there are replaced).",
)
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Target model.")
def demo_cmd(output_dir: Path, model: str) -> int:
    """Run the main job on the bundled sample data: format, validate, analyze."""
    result = run_demo(output_dir, model=model, on_step=lambda text: _heading(text))
    for run in result.datasets:
        _heading(f"{run.name}: format")
        render_format_report(run.formatted)
        _heading(f"{run.name}: validate")
        render_report(run.validation)
        _heading(f"{run.name}: analyze")
        render_analysis(run.analysis)
    _heading("files")
    for path in sorted(output_dir.iterdir()):
        common.stdout.print(f"  {path}", highlight=False)
    return 0 if all(run.validation.ok for run in result.datasets) else 1
