"""The sample data bundled with tunelab (slices of TREC and DocSpider; see resources/samples)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLES = {
    "trec": "trec_sample.tsv",
    "docspider": "docspider_sample.json",
    "docspider_collections": "docspider_collections.json",
}


def sample_path(name: str) -> Path:
    """Path of a bundled sample file by its short name (a key of SAMPLES)."""
    root = resources.files("tunelab") / "resources" / "samples"
    return Path(str(root / SAMPLES[name]))
