"""The README's Python API example works as written, with plain string paths."""

from __future__ import annotations

import shutil

from tunelab.data.analyze import analyze_file
from tunelab.data.formatter import format_dataset
from tunelab.data.sources import SourceOptions
from tunelab.data.validate import validate_file
from tunelab.samples import sample_path


def test_readme_pipeline_with_string_paths(tmp_path, monkeypatch):
    shutil.copy(sample_path("docspider"), tmp_path / "train.json")
    shutil.copy(sample_path("docspider_collections"), tmp_path / "collections.json")
    monkeypatch.chdir(tmp_path)
    report = format_dataset(
        "train.json",
        "data/train.jsonl",
        "data/val.jsonl",
        options=SourceOptions(context_field="db_id", context_file="collections.json"),
    )
    assert (report.n_train, report.n_val) == (240, 60)
    check = validate_file("data/train.jsonl", val_path="data/val.jsonl", model="gpt-4o-mini")
    assert check.ok
    facts = analyze_file("data/train.jsonl", model="gpt-4o-mini")
    assert facts.n_examples == 240
    assert facts.estimated_cost_usd > 0
    assert facts.task["kind"] == "queries"
