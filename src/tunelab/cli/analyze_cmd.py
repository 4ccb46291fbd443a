"""`tunelab analyze`: tokens, distributions, epochs, billed tokens and cost of a dataset
(chat, preference or reinforcement)."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.cli import common
from tunelab.cli.options import (
    COUNT,
    base_model_option,
    input_file,
    json_option,
    training_method_option,
    val_option,
)
from tunelab.cli.progress import token_counting_progress
from tunelab.cli.render import say
from tunelab.cli.render_analysis import render_analysis
from tunelab.data.analyze import analyze_file
from tunelab.data.method_scan import DEFAULT_MAX_ANSWER_TOKENS
from tunelab.data.report_html import render_html
from tunelab.io import atomic_write_text, check_output_path


@click.command("analyze")
@click.argument("file", type=input_file)
@val_option("Validation file to analyze as well.")
@base_model_option("Target model (name, alias or local Hugging Face directory).")
@json_option("Print the analysis as JSON.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write an HTML report.")
@click.option("--prices", type=input_file, help="Price table (JSON) merged over the shipped one.")
@click.option("--force", is_flag=True, help="Overwrite an existing --html file.")
@training_method_option(
    "The file's format: supervised (chat), dpo (preference pairs) or reinforcement "
    "[default: detected]."
)
@click.option(
    "--max-answer-tokens",
    type=COUNT,
    default=DEFAULT_MAX_ANSWER_TOKENS,
    show_default=True,
    help="Reinforcement: the tokens each answer written in training may take.",
)
def analyze_cmd(
    file: Path,
    val_file: Path | None,
    model: str,
    as_json: bool,
    html_path: Path | None,
    prices: Path | None,
    force: bool,
    method: str | None,
    max_answer_tokens: int,
) -> int:
    """Count tokens, recommend epochs and estimate the cost of fine-tuning on a dataset."""
    inputs = (file,) if val_file is None else (file, val_file)
    if html_path is not None:
        check_output_path(html_path, force=force, inputs=inputs)
    with token_counting_progress(model) as progress:
        analysis = analyze_file(
            file,
            val_path=val_file,
            model=model,
            prices=prices,
            progress=progress,
            method=method,
            max_answer_tokens=max_answer_tokens,
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
