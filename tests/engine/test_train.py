"""The training loop end to end on a tiny model: learning, outputs, robustness."""

from __future__ import annotations

import json
import threading
from datetime import datetime

import pytest
import torch
from peft import PeftModel
from transformers import LlamaForCausalLM

from tiny import Crash, crash_at_step
from tunelab.engine import plan, train
from tunelab.engine.checkpoint import MARKER, complete_checkpoints
from tunelab.engine.dataset import collate, tokenize_examples
from tunelab.engine.loss import token_loss
from tunelab.errors import TunelabError

# peft's loader reads a transformers property that transformers 5 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")


def mean_loss(model, tokenizer, examples) -> float:
    dataset = tokenize_examples(examples, tokenizer, 512)
    with torch.no_grad():
        loss, _ = token_loss(model.eval(), collate(dataset.examples, tokenizer.pad_token_id, "cpu"))
    return float(loss) / sum(e.n_trained for e in dataset.examples)


def metric_lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lora_lowers_the_loss_and_changes_only_the_adapter(
    tmp_path, tokenizer, make_model, examples, fast_config, precision
):
    model = make_model()
    before = mean_loss(model, tokenizer, examples)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}

    result = train(
        model,
        tokenizer,
        examples,
        None,
        fast_config(n_epochs=6, learning_rate=3e-2, precision=precision),
        tmp_path / "run",
    )

    assert result.status == "succeeded" and result.step == result.total_steps == 18
    assert mean_loss(model.float(), tokenizer, examples) < before - 0.5
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        original = base[name.replace("base_layer.", "")]
        expected = original.to(torch.bfloat16).float() if precision == "bf16" else original
        assert torch.equal(param.detach().float(), expected), name
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_full_fine_tuning_lowers_the_loss_and_changes_base_weights(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    model = make_model()
    before = mean_loss(model, tokenizer, examples)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}

    train(
        model,
        tokenizer,
        examples,
        None,
        fast_config(method="full", learning_rate=3e-3),
        tmp_path / "run",
    )

    assert mean_loss(model, tokenizer, examples) < before - 0.5
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), base[n])]
    assert len(changed) == len(base)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "run")
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)


def test_output_directory_holds_a_loadable_adapter_metrics_and_config(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    run = tmp_path / "run"
    updates = []
    result = train(
        make_model(),
        tokenizer,
        examples,
        examples[:4],
        fast_config(eval_every=2),
        run,
        base_model="tiny-llama",
        metadata={"train_file": "train.jsonl"},
        callback=updates.append,
    )

    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tunelab_config.json",
        "metrics.jsonl",
        "loss.svg",
    ):
        assert (run / name).is_file(), name
    curve = (run / "loss.svg").read_text()
    assert curve.startswith("<svg") and curve.count("<polyline") == 2  # training, validation
    summary = json.loads((run / "tunelab_config.json").read_text())
    assert summary["base_model"] == "tiny-llama"
    assert summary["config"]["batch_size"] == 4 and summary["config"]["total_steps"] == 6
    assert summary["dataset"]["train"]["n_examples"] == 12
    assert summary["metadata"] == {"train_file": "train.jsonl"}

    lines = metric_lines(run)
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert all(
        {"loss", "learning_rate", "tokens_per_second", "eta_seconds"} <= set(line) for line in lines
    )
    assert [line["step"] for line in lines if "val_loss" in line] == [2, 4, 6]
    # Each step's resident memory: the peak so far never falls; the process holds the model.
    peaks = [line["peak_rss_mb"] for line in lines]
    assert peaks == sorted(peaks) and all(line["rss_mb"] > 50 for line in lines)
    assert updates[-1].total_steps == 6 and updates[-1].val_loss == result.val_loss
    assert 0 <= result.val_mean_token_accuracy <= 1

    loaded = PeftModel.from_pretrained(make_model(), run)
    assert mean_loss(loaded, tokenizer, examples) == pytest.approx(
        mean_loss(loaded, tokenizer, examples)
    )


def test_throughput_is_recorded_per_model_and_method_and_used_to_estimate_time(
    tmp_path, tokenizer, make_model, examples, fast_config, isolated_home
):
    assert (
        plan(tokenizer, examples, config=fast_config(), base_model="tiny")["estimated_seconds"]
        is None
    )
    train(
        make_model(),
        tokenizer,
        examples,
        examples[:4],
        fast_config(),
        tmp_path / "run",
        base_model="tiny",
    )

    record = json.loads((isolated_home / "throughput.json").read_text())["tiny"]["lora"]
    assert record["tokens_per_second"] > 0 and record["eval_tokens_per_second"] > 0
    assert record["overhead_seconds"] >= 0 and record["device"] == "cpu"
    datetime.fromisoformat(record["measured_at"])
    estimate = plan(tokenizer, examples, config=fast_config(), base_model="tiny")
    assert estimate["total_steps"] == 6 and estimate["tokens_to_process"] > 0
    assert estimate["estimated_seconds"] == pytest.approx(
        estimate["tokens_to_process"] / record["tokens_per_second"] + record["overhead_seconds"],
        rel=0.01,
    )
    # Full fine-tuning is not LoRA: its estimate scales LoRA's measurement by its cost
    # until a full run measures its own, and another model has none.
    full = plan(tokenizer, examples, config=fast_config(method="full"), base_model="tiny")
    assert full["throughput"]["method"] == "lora"
    assert full["estimated_seconds"] > estimate["estimated_seconds"]
    assert plan(tokenizer, examples, config=fast_config(), base_model="other")["throughput"] is None


def test_an_estimate_with_max_steps_counts_only_the_steps_the_run_takes(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    # A timed comparison would measure the machine's load, not the estimate; what matters
    # is that a run stopped by max_steps is estimated for its own steps, not all epochs.
    train(
        make_model(),
        tokenizer,
        examples,
        examples[:4],
        fast_config(),
        tmp_path / "measure",
        base_model="tiny",
    )
    capped = plan(
        tokenizer, examples, examples[:4], fast_config(n_epochs=20, max_steps=3), base_model="tiny"
    )
    uncapped = plan(tokenizer, examples, examples[:4], fast_config(n_epochs=20), base_model="tiny")
    assert capped["total_steps"] == 3 and uncapped["total_steps"] > 3
    assert capped["tokens_to_process"] == round(
        capped["train"]["total_tokens"] * 3 / capped["steps_per_epoch"]
    )
    assert capped["estimated_seconds"] < uncapped["estimated_seconds"]

    config = fast_config(n_epochs=20, max_steps=3)
    result = train(
        make_model(), tokenizer, examples, examples[:4], config, tmp_path / "run", base_model="tiny"
    )
    assert result.step == result.total_steps == 3 and result.status == "succeeded"


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_after_a_crash_reproduces_the_uninterrupted_run(
    tmp_path, tokenizer, make_model, examples, fast_config, method
):
    config = fast_config(
        method=method,
        n_epochs=3,
        gradient_accumulation_steps=2,
        lr_scheduler="cosine",
        warmup_steps=2,
        lora_dropout=0.2,
        learning_rate=1e-2 if method == "lora" else 1e-3,
        checkpoint_every=2,
    )
    straight, straight_model = [], make_model()
    train(
        straight_model,
        tokenizer,
        examples,
        None,
        config,
        tmp_path / "straight",
        callback=straight.append,
    )

    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        train(make_model(), tokenizer, examples, None, config, crashed, callback=crash_at_step(5))
    # What a kill -9 while writing the next checkpoint leaves behind.
    (crashed / "checkpoints" / ".tmp-step-00000006.999").mkdir()
    (crashed / "checkpoints" / "step-00000006").mkdir()
    # The base model again; for full fine-tuning even other weights: the checkpoint has them all.
    resumed, resumed_model = [], make_model(seed=1 if method == "full" else 0)
    result = train(
        resumed_model,
        tokenizer,
        examples,
        None,
        config,
        crashed,
        resume=True,
        callback=resumed.append,
    )

    assert result.resumed_from_step == 4 and result.status == "succeeded"
    assert [u.step for u in resumed] == [5, 6, 7, 8, 9]
    for after, before in zip(resumed, straight[4:], strict=True):
        assert after.loss == pytest.approx(before.loss, abs=1e-6)
        assert after.learning_rate == pytest.approx(before.learning_rate)
    for a, b in zip(resumed_model.parameters(), straight_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert [line["step"] for line in metric_lines(crashed)] == list(range(1, 10))
    assert [p.name for p in complete_checkpoints(crashed)] == ["step-00000008", "step-00000009"]


def test_resume_refuses_changed_settings(tmp_path, tokenizer, make_model, examples, fast_config):
    cancel = threading.Event()
    train(
        make_model(),
        tokenizer,
        examples,
        None,
        fast_config(),
        tmp_path / "run",
        callback=lambda update: cancel.set(),
        cancel=cancel,
    )
    with pytest.raises(TunelabError) as caught:
        train(
            make_model(),
            tokenizer,
            examples,
            None,
            fast_config(batch_size=2),
            tmp_path / "run",
            resume=True,
        )
    assert caught.value.code == "resume_mismatch"
    assert "--batch-size was 4, now 2" in caught.value.message


def test_cancel_stops_within_one_step_and_leaves_a_loadable_checkpoint(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    cancel = threading.Event()

    def cancel_after_step_2(update):
        if update.step == 2:
            cancel.set()

    model = make_model()
    result = train(
        model,
        tokenizer,
        examples,
        None,
        fast_config(),
        tmp_path / "run",
        callback=cancel_after_step_2,
        cancel=cancel,
    )

    assert (result.status, result.step) == ("cancelled", 2)
    assert not (tmp_path / "run" / "tunelab_config.json").exists()  # not a finished output
    checkpoint = result.last_checkpoint
    assert checkpoint.name == "step-00000002" and (checkpoint / MARKER).is_file()
    loaded = PeftModel.from_pretrained(make_model(), checkpoint)
    assert mean_loss(loaded, tokenizer, examples) == pytest.approx(
        mean_loss(model, tokenizer, examples), abs=1e-5
    )


def test_cancel_during_validation_stops_at_once_with_the_step_checkpointed(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    cancel, batches_seen = threading.Event(), []

    def on_validation(done, total):
        batches_seen.append((done, total))
        cancel.set()  # Ctrl-C while the first batch of the step-2 validation runs

    result = train(
        make_model(),
        tokenizer,
        examples,
        examples * 4,
        fast_config(eval_every=2),
        tmp_path / "run",
        cancel=cancel,
        on_validation=on_validation,
    )

    assert (result.status, result.step) == ("cancelled", 2)
    assert batches_seen == [(1, 12)]  # 48 validation examples in batches of 4: 1 scored
    assert result.last_checkpoint.name == "step-00000002"
    assert "val_loss" not in metric_lines(tmp_path / "run")[-1]  # no half-pass figure


def test_periodic_validation_scores_a_bounded_sample_and_the_last_one_everything(
    tmp_path, tokenizer, make_model, examples, fast_config, monkeypatch
):
    from tunelab.engine import trainer

    monkeypatch.setattr(trainer, "PERIODIC_EVAL_EXAMPLES", 8)
    passes = []
    train(
        make_model(),
        tokenizer,
        examples,
        examples * 4,
        fast_config(eval_every=2),
        tmp_path / "run",
        on_validation=lambda *batch: passes.append(batch),
    )
    lines = [m for m in metric_lines(tmp_path / "run") if "val_loss" in m]
    assert [(m["step"], m["val_examples"]) for m in lines] == [(2, 8), (4, 8), (6, 48)]
    assert passes.count((2, 2)) == 2 and passes[-1] == (12, 12)


def test_non_finite_loss_stops_the_run_naming_the_step(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    model = make_model()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(TunelabError) as caught:
        train(model, tokenizer, examples, None, fast_config(), tmp_path / "run")
    assert caught.value.code == "non_finite_loss"
    assert "step 1" in caught.value.message and "learning rate" in caught.value.hint
    assert not (tmp_path / "run" / "tunelab_config.json").exists()


def test_a_huge_learning_rate_is_refused_before_anything_trains(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    """A rate past 1 would swamp the weights at the first step (the non-finite check would
    catch it only later, if at all): the config refuses it and no output is written."""
    config = fast_config(method="full", learning_rate=1e30, max_grad_norm=None, n_epochs=25)
    with pytest.raises(TunelabError) as caught:
        train(make_model(), tokenizer, examples, None, config, tmp_path / "run")
    assert caught.value.code == "invalid_config" and "--learning-rate" in caught.value.message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
)
def test_out_of_memory_becomes_an_error_saying_what_to_reduce(
    tmp_path, tokenizer, make_model, examples, fast_config, monkeypatch, failure
):
    def exhausted(model, batch):
        raise failure

    monkeypatch.setattr("tunelab.engine.objectives.scored_tokens", exhausted)
    with pytest.raises(TunelabError) as caught:
        train(make_model(), tokenizer, examples, None, fast_config(), tmp_path / "run")
    assert caught.value.code == "out_of_memory"
    assert "--batch-size" in caught.value.hint and "--max-seq-len" in caught.value.hint


def test_existing_outputs_are_not_overwritten_without_force(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    run = tmp_path / "run"
    train(make_model(), tokenizer, examples, None, fast_config(max_steps=1), run)
    for resume in (False, True):
        with pytest.raises(TunelabError) as caught:
            train(
                make_model(),
                tokenizer,
                examples,
                None,
                fast_config(max_steps=1),
                run,
                resume=resume,
            )
        assert caught.value.code == "output_exists"
    result = train(
        make_model(), tokenizer, examples, None, fast_config(max_steps=2), run, force=True
    )
    assert result.step == 2 and len(metric_lines(run)) == 2


def test_train_reads_a_chat_jsonl_file(tmp_path, tokenizer, make_model, fast_config):
    path = tmp_path / "train.jsonl"
    path.write_text(
        '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", '
        '"content": "Hello"}]}\n' * 3,
        encoding="utf-8",
    )
    result = train(make_model(), tokenizer, path, path, fast_config(max_steps=1), tmp_path / "run")
    assert result.dataset["train"]["n_examples"] == 3 and result.val_loss is not None
