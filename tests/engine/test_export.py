"""Export: a trained model as a Hugging Face directory that loads without tunelab."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.engine import train
from tunelab.engine.export import export_model
from tunelab.engine.models import load_base, load_trained
from tunelab.errors import TunelabError

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 12], [1, 2, 3, 4, 5, 6, 7, 8]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.fixture
def base_dir(tmp_path, tokenizer, make_model):
    directory = tmp_path / "tiny-base"
    make_model().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def train_run(tmp_path, base_dir, examples, fast_config):
    def run(name: str = "run", **changes):
        model, tokenizer, info = load_base(base_dir)
        output = tmp_path / name
        config = fast_config(**changes)
        train(model, tokenizer, examples, None, config, output, base_model=info.name)
        return output

    return run


def test_a_merged_export_loads_with_transformers_and_matches_base_plus_adapter(
    tmp_path, train_run, tokenizer
):
    run = train_run()
    adapter_model, _, _ = load_trained(run, merge=False)
    assert isinstance(adapter_model, PeftModel)

    result = export_model(run, tmp_path / "export")

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert torch.allclose(logits(exported), logits(adapter_model), atol=1e-5)
    assert result["merged"] and result["format"] == "hf_model"
    assert "model.safetensors" in result["files"] and "adapter_config.json" not in result["files"]
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert "quantization_config" not in config
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "export")
    assert reloaded.chat_template == tokenizer.chat_template
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left
    umask = os.umask(0)
    os.umask(umask)
    mode = (tmp_path / "export" / "model.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask  # as any file the user writes, not private like a temp file


def test_an_unmerged_export_is_a_peft_adapter_naming_its_base(tmp_path, train_run, base_dir):
    run = train_run()
    result = export_model(run, tmp_path / "adapter", merge=False)

    for written in (run / "adapter_config.json", tmp_path / "adapter" / "adapter_config.json"):
        config = json.loads(written.read_text())
        # Portable: the base directory by its name, no absolute path from this machine.
        assert config["base_model_name_or_path"] == base_dir.name
        assert '"/' not in written.read_text()  # no string in it is an absolute path
    assert result["format"] == "peft_adapter" and not result["merged"]
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    expected, _, _ = load_trained(run)
    assert torch.allclose(logits(reloaded), logits(expected), atol=1e-5)


def test_a_full_fine_tune_exports_as_a_model(tmp_path, train_run):
    run = train_run(method="full", learning_rate=3e-3)
    trained, _, _ = load_trained(run)

    export_model(run, tmp_path / "export", merge=False)

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert torch.equal(logits(exported), logits(trained))


def test_an_existing_output_is_replaced_only_with_force(tmp_path, train_run):
    run = train_run()
    output = tmp_path / "export"
    output.mkdir()
    (output / "old.txt").write_text("old")

    with pytest.raises(TunelabError) as raised:
        export_model(run, output)
    assert raised.value.code == "output_exists"
    assert (output / "old.txt").exists()

    export_model(run, output, force=True)
    assert not (output / "old.txt").exists() and (output / "model.safetensors").exists()


def test_refuses_an_output_inside_the_run_and_a_directory_that_is_not_a_run(
    tmp_path, train_run, base_dir
):
    run = train_run()
    with pytest.raises(TunelabError) as raised:
        export_model(run, run / "export")
    assert raised.value.code == "output_is_input"
    with pytest.raises(TunelabError) as raised:
        export_model(base_dir, tmp_path / "export")
    assert raised.value.code == "not_a_training_output"


def test_the_model_card_shows_the_runs_loss_curve_up_to_the_exported_step(tmp_path, train_run):
    run = train_run(checkpoint_every=2)  # 12 examples, batch 4, 2 epochs: 6 steps
    checkpoint = sorted((run / "checkpoints").iterdir())[0]
    step = int(checkpoint.name.removeprefix("step-"))
    assert step < 6

    for source, steps in ((run, 6), (checkpoint, step)):
        export = tmp_path / f"export-{steps}"
        result = export_model(source, export, merge=False)
        card = (export / "README.md").read_text()
        assert "![Training and validation loss per step](loss.svg)" in card
        assert "loss.svg" in result["files"]
        curve = (export / "loss.svg").read_text()
        points = re.search(r'<polyline class="train" points="([^"]+)"', curve).group(1)
        assert len(points.split()) == steps
