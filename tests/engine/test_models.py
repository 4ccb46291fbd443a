"""Loading models by name or path: HF directories, training outputs, the Hub, the bundled cache."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from peft import PeftModel

from tunelab import catalog
from tunelab.engine import sources, train
from tunelab.engine.models import load_base, load_trained, resolve_model_source
from tunelab.errors import TunelabError

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

IDS = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 12]])


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.fixture
def base_dir(tmp_path, tokenizer, make_model):
    """A tiny model saved as a standard Hugging Face directory."""
    directory = tmp_path / "tiny-base"
    make_model().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def trained(tmp_path, base_dir, examples, fast_config, name="run", **changes):
    """Train a model loaded from `base_dir`; returns (trained model in memory, output dir)."""
    model, tokenizer, info = load_base(base_dir)
    output = tmp_path / name
    train(model, tokenizer, examples, None, fast_config(**changes), output, base_model=info.name)
    return model, output


def test_a_model_directory_loads_with_its_tokenizer(base_dir, make_model):
    model, tokenizer, info = load_base(base_dir)

    assert torch.equal(logits(model), logits(make_model()))
    assert tokenizer.chat_template and tokenizer.pad_token == "<|endoftext|>"
    assert (info.kind, info.name, info.base_model) == ("directory", str(base_dir), str(base_dir))
    assert (info.context_length, info.is_adapter, info.method) == (256, False, None)
    assert model.dtype == torch.float32 and not model.training


def test_a_lora_output_loads_merged_onto_its_base(tmp_path, base_dir, examples, fast_config):
    in_memory, output = trained(tmp_path, base_dir, examples, fast_config)

    model, _, info = load_base(output)

    assert not isinstance(model, PeftModel)  # merged: a plain model training can start from
    assert torch.allclose(logits(model), logits(in_memory), atol=1e-5)
    assert (info.kind, info.method, info.is_adapter) == ("trained", "lora", True)
    assert info.base_model == str(base_dir) and info.context_length == 256
    unmerged, _, _ = load_trained(output, merge=False)
    assert isinstance(unmerged, PeftModel)
    assert torch.allclose(logits(unmerged), logits(in_memory), atol=1e-5)


def test_training_continues_from_a_trained_model(tmp_path, base_dir, examples, fast_config):
    first, output = trained(tmp_path, base_dir, examples, fast_config)
    model, tokenizer, info = load_base(output)
    second = tmp_path / "second"

    result = train(
        model, tokenizer, examples, None, fast_config(n_epochs=1), second, base_model=info.name
    )

    assert result.status == "succeeded"
    stacked, _, stacked_info = load_base(second)
    assert stacked_info.base_model == str(output)  # a chain: base → adapter 1 → adapter 2
    assert torch.allclose(logits(stacked), logits(model), atol=1e-5)
    assert not torch.allclose(logits(stacked), logits(first), atol=1e-3)


def test_a_full_fine_tune_and_a_checkpoint_load(tmp_path, base_dir, examples, fast_config):
    in_memory, output = trained(
        tmp_path, base_dir, examples, fast_config, method="full", learning_rate=3e-3
    )
    model, _, info = load_base(output)
    assert (info.method, info.is_adapter) == ("full", False)
    assert torch.allclose(logits(model), logits(in_memory), atol=1e-5)

    _, lora_output = trained(tmp_path, base_dir, examples, fast_config, name="lora")
    checkpoint = sorted((lora_output / "checkpoints").iterdir())[-1]
    from_checkpoint, tokenizer, info = load_base(checkpoint)  # no tokenizer of its own
    final, _, _ = load_base(lora_output)
    assert info.kind == "trained" and tokenizer.chat_template
    assert torch.allclose(logits(from_checkpoint), logits(final), atol=1e-5)


def test_an_unfinished_run_is_refused_with_a_hint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    with pytest.raises(TunelabError) as raised:
        load_base(run)
    assert raised.value.code == "training_unfinished"
    assert "--resume" in raised.value.hint


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("gpt-4o-mini", "not_a_local_model"),
        ("no-such-model", "unknown_model"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc", "not_a_local_model"),
    ],
)
def test_names_that_cannot_be_loaded_locally(name, code):
    with pytest.raises(TunelabError) as raised:
        resolve_model_source(name)
    assert raised.value.code == code


def test_a_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TunelabError) as raised:
        load_base(tmp_path)
    assert raised.value.code == "not_a_model_dir"


def test_a_hub_id_offline_fails_fast_without_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(repo_id):
        raise AssertionError("the Hub must not be contacted when offline")

    monkeypatch.setattr(sources, "_check_on_hub", no_network)
    with pytest.raises(TunelabError) as raised:
        load_base("tunelab-tests/no-such-model-xyz")
    assert raised.value.code == "hub_unreachable"
    assert "HF_HUB_OFFLINE" in raised.value.message


def test_a_hub_id_loads_from_its_snapshot(monkeypatch, base_dir, make_model):
    monkeypatch.setattr(sources, "_hub_snapshot", lambda repo_id: base_dir)
    model, _, info = load_base("someone/tiny-llama")
    assert (info.kind, info.name, info.path) == ("hub", "someone/tiny-llama", base_dir)
    assert torch.equal(logits(model), logits(make_model()))


# ----- the bundled model's cache -----------------------------------------------------------


def fake_weights_conversion(calls: list, barrier: threading.Barrier | None = None):
    def convert(source, staging):
        calls.append(staging)
        if barrier is not None:
            barrier.wait(timeout=120)  # both stage before either moves into place (slow when busy)
        (staging / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
        (staging / "tokenizer_config.json").write_text("{}")
        (staging / "model.safetensors").write_text("weights")
        (staging / catalog.WEIGHTS_MARKER).write_text("{}")

    return convert


def test_a_tokenizer_only_cache_gets_the_weights_added_marker_last(monkeypatch, isolated_home):
    target = isolated_home / "models" / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "tokenizer.json").write_text("{}")
    (target / "tokenizer_config.json").write_text("{}")  # an earlier version's complete cache
    calls, moved = [], []
    monkeypatch.setattr(catalog, "_convert_bundled_weights", fake_weights_conversion(calls))
    real_replace = catalog.os.replace
    monkeypatch.setattr(
        catalog.os, "replace", lambda a, b: (moved.append(b.name), real_replace(a, b))
    )

    assert catalog.bundled_model_dir() == target  # the tokenizer alone: nothing to convert
    assert calls == []
    assert catalog.bundled_model_dir(weights=True) == target
    assert catalog.bundled_model_dir(weights=True) == target

    assert len(calls) == 1
    assert moved[-2:] == ["tokenizer_config.json", catalog.WEIGHTS_MARKER]
    names = sorted(p.name for p in target.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert [p.name for p in target.parent.iterdir()] == ["smollm2-135m-instruct"]


def test_two_concurrent_conversions_leave_one_complete_cache(monkeypatch, isolated_home):
    calls = []
    barrier = threading.Barrier(2)
    monkeypatch.setattr(
        catalog, "_convert_bundled_weights", fake_weights_conversion(calls, barrier)
    )
    results, errors = [], []

    def convert() -> None:
        try:
            results.append(catalog.bundled_model_dir(weights=True))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    target = isolated_home / "models" / "smollm2-135m-instruct"
    assert errors == [] and results == [target, target] and len(calls) == 2
    assert (target / catalog.WEIGHTS_MARKER).exists() and (target / "model.safetensors").exists()
    assert [p.name for p in target.parent.iterdir()] == ["smollm2-135m-instruct"]


@pytest.mark.slow
def test_the_bundled_model_is_dequantized_once_then_loads_fast(smollm2_home):
    first, tokenizer, info = load_base("SmolLM2-135M-Instruct")  # converts, unless cached
    model, _, _ = load_base()

    cache = smollm2_home / "models" / "smollm2-135m-instruct"
    assert info.kind == "bundled" and info.path == cache and info.context_length == 8192
    assert model.config._name_or_path == str(cache)
    assert not hasattr(model.config, "quantization_config")
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())
    assert (cache / "model.safetensors").stat().st_size > 500_000_000  # fp32
    assert torch.equal(logits(first), logits(model))
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
