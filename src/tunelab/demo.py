"""The main job on the bundled sample data: what `make demo` and `tunelab demo` run.

Today: format two real-data samples (TREC question classification and DocSpider
NL→MongoDB with schema context), validate the results and analyze them for the local
default model and for the hosted providers. Each step is a plain API call, so the demo is
also the shortest example of the Python API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.catalog import DEFAULT_MODEL
from tunelab.data.analyze import analyze_file
from tunelab.data.formatter import FormatReport, format_dataset
from tunelab.data.report_html import render_html
from tunelab.data.sources import SourceOptions
from tunelab.data.validate import ValidationReport, validate_file
from tunelab.io import atomic_write_text
from tunelab.samples import sample_path


@dataclass
class DatasetRun:
    """One sample taken through format → validate → analyze."""

    name: str
    formatted: FormatReport
    validation: ValidationReport
    analysis: dict
    report_html: Path


@dataclass
class DemoResult:
    output_dir: Path
    datasets: list[DatasetRun] = field(default_factory=list)


def _format_samples(out: Path) -> dict[str, FormatReport]:
    # The demo owns its output directory, so it overwrites its own earlier outputs.
    trec = format_dataset(
        sample_path("trec"), out / "trec_train.jsonl", out / "trec_val.jsonl", force=True
    )
    docspider = format_dataset(
        sample_path("docspider"),
        out / "docspider_train.jsonl",
        out / "docspider_val.jsonl",
        options=SourceOptions(
            context_field="db_id", context_file=sample_path("docspider_collections")
        ),
        force=True,
    )
    return {"trec": trec, "docspider": docspider}


def run_demo(
    output_dir: Path,
    *,
    model: str = DEFAULT_MODEL,
    on_step: Callable[[str], None] | None = None,
) -> DemoResult:
    """Format, validate and analyze the bundled samples into `output_dir`."""
    step = on_step or (lambda _text: None)
    output_dir.mkdir(parents=True, exist_ok=True)
    step("format the bundled samples into chat JSONL")
    formatted = _format_samples(output_dir)
    result = DemoResult(output_dir)
    for name, report in formatted.items():
        train, val = Path(report.train_output), Path(report.val_output)
        step(f"validate and analyze {name}")
        validation = validate_file(train, val_path=val, model=model)
        analysis = analyze_file(train, val_path=val, model=model)
        html = output_dir / f"{name}_report.html"
        atomic_write_text(html, render_html(analysis))
        result.datasets.append(DatasetRun(name, report, validation, analysis, html))
    return result
