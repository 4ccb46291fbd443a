"""`tunelab validate`: every defect of a training JSONL file (chat, preference or
reinforcement), grouped; exit 1 on any error."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.cli import common
from tunelab.cli.options import (
    grader_field_options,
    input_file,
    json_option,
    model_option,
    training_method_option,
    val_option,
)
from tunelab.cli.progress import token_counting_progress
from tunelab.cli.render import render_validation_report
from tunelab.data.method_scan import validate_data_file
from tunelab.data.reinforcement import grader_fields


@click.command("validate")
@click.argument("file", type=input_file)
@val_option("Validation file to check as well.")
@model_option(
    "Target model (name, alias or local Hugging Face directory): adds the "
    "context-length, provider-minimum and tokenizer special-token checks."
)
@training_method_option(
    "The file's format: supervised (chat), dpo (preference pairs) or reinforcement "
    "(prompts for a grader) [default: detected]."
)
@grader_field_options
@json_option("Print the full report as JSON.")
def validate_cmd(
    file: Path,
    val_file: Path | None,
    model: str | None,
    method: str | None,
    grader_field_names: tuple[str, ...],
    grader_file: Path | None,
    as_json: bool,
) -> int:
    """Check a fine-tuning JSONL file (chat, preference or reinforcement); exit 1 on errors."""
    required = grader_fields(grader_field_names, grader_file)
    with token_counting_progress(model) as progress:
        report = validate_data_file(
            file,
            method=method,
            val_path=val_file,
            model=model,
            grader_fields=required,
            progress=progress,
        )
    if as_json:
        common.print_json(report.to_dict())
    else:
        render_validation_report(report)
    return 0 if report.ok else 1
