"""`tunelab validate`: every defect of a chat JSONL file, grouped; exit 1 on any error."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.cli import common
from tunelab.cli.options import input_file, json_option, model_option, val_option
from tunelab.cli.progress import reading_progress
from tunelab.cli.render import render_validation_report
from tunelab.data.validate import validate_file


@click.command("validate")
@click.argument("file", type=input_file)
@val_option("Validation file to check as well.")
@model_option(
    "Target model (name, alias or local Hugging Face directory): adds the "
    "context-length, provider-minimum and tokenizer special-token checks."
)
@json_option("Print the full report as JSON.")
def validate_cmd(file: Path, val_file: Path | None, model: str | None, as_json: bool) -> int:
    """Check a chat fine-tuning JSONL file; exit 1 if it has errors."""
    with reading_progress() as progress:
        report = validate_file(file, val_path=val_file, model=model, progress=progress)
    if as_json:
        common.print_json(report.to_dict())
    else:
        render_validation_report(report)
    return 0 if report.ok else 1
