"""Full fine-tuning sharded with FSDP over 2 torchrun processes (gloo on CPU)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tiny import QUESTIONS, save_tiny_model, write_chat_jsonl
from tunelab.cli import main
from tunelab.engine.checkpoint import check_resumable, complete_checkpoints, read_checkpoint_meta
from tunelab.engine.config import FULL_TRAINING_BYTES_PER_PARAMETER, TrainConfig
from tunelab.errors import TunelabError
from tunelab.providers.local.ranks import kill_tree

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

# 7 examples in batches of 3 (3, 3, 1), each cut into up to 2 micro-batches on each of 2
# ranks: 3 micro-batches, or 1, leave rank 1 one short (a padding pass); 5 validation
# examples in batches of 2 likewise.
FLAGS = [
    "--method",
    "full",
    "--learning-rate",
    "1e-3",
    "--precision",
    "fp32",
    "--lr-scheduler",
    "constant",
    "--warmup-steps",
    "0",
    "--batch-size",
    "3",
    "--gradient-accumulation-steps",
    "2",
    "--n-epochs",
    "3",
    "--checkpoint-every",
    "2",
]
SHARDED = ["--nproc-per-node", "2", "--distributed", "fsdp"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharding")
    base = save_tiny_model(root / "tiny-base")
    train = write_chat_jsonl(root / "train.jsonl", QUESTIONS[:7])
    val = write_chat_jsonl(root / "val.jsonl", QUESTIONS[7:])
    return base, train, val


def command(files, output, *extra) -> list[str]:
    base, train, val = files
    return [
        sys.executable,
        "-m",
        "tunelab",
        "train",
        "--train",
        str(train),
        "--val",
        str(val),
        "--model",
        str(base),
        "--output",
        str(output),
        *FLAGS,
        *extra,
    ]


def run(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def sharded_run(files, tmp_path_factory):
    """An uninterrupted 2-process FSDP run."""
    output = tmp_path_factory.mktemp("sharded") / "run"
    run(command(files, output, *SHARDED))
    return output


def records(output) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # torchrun and two ranks (torch and transformers imported three times)
def test_two_sharded_processes_train_like_one_at_the_same_global_batch(
    files, sharded_run, tmp_path, capsys
):
    one = tmp_path / "one"
    run(command(files, one))

    first, second = records(one), records(sharded_run)
    assert [r["step"] for r in second] == [r["step"] for r in first] == list(range(1, 10))
    for a, b in zip(first, second, strict=True):
        # Gradients summed in another order (per micro-batch, then over ranks): the last bits.
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["trained_tokens"] == a["trained_tokens"]
    # Gradients summed over ranks, not averaged: the first step's are the same.
    assert second[0]["grad_norm"] == pytest.approx(first[0]["grad_norm"], rel=1e-5)
    assert second[-1]["val_loss"] == pytest.approx(first[-1]["val_loss"], rel=1e-4)
    whole, gathered = (
        load_file(one / "model.safetensors"),
        load_file(sharded_run / "model.safetensors"),
    )
    assert gathered.keys() == whole.keys()  # the tied head saved once, as one process saves it
    for name, tensor in whole.items():
        assert torch.allclose(gathered[name], tensor, atol=1e-5), name
    config = json.loads((sharded_run / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]  # not fully_shard's class

    capsys.readouterr()
    assert (
        main(["chat", str(sharded_run), "What is the capital of Spain?", "--max-tokens", "6"]) == 0
    )
    assert capsys.readouterr().out.strip()


def saved_steps(output) -> list[int]:
    """Steps of the complete checkpoints, skipping one pruned while it was being read."""
    steps = []
    for checkpoint in complete_checkpoints(output):
        with contextlib.suppress(TunelabError):
            steps.append(read_checkpoint_meta(checkpoint)["step"])
    return steps


@pytest.mark.slow
def test_a_killed_sharded_run_resumes_to_the_uninterrupted_result(files, sharded_run, tmp_path):
    output = tmp_path / "run"
    args = command(files, output, *SHARDED)
    running = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while max(saved_steps(output), default=0) < 4:
        assert running.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    kill_tree(running.pid)
    running.wait()
    assert not (output / "tunelab_config.json").exists()  # killed before the end
    saved = read_checkpoint_meta(complete_checkpoints(output)[-1])["step"]
    checkpoint = load_file(complete_checkpoints(output)[-1] / "model.safetensors")
    assert "lm_head.weight" not in checkpoint  # a normal checkpoint: the full, tied weights

    run([*args, "--resume"])

    resumed, uninterrupted = records(output), records(sharded_run)
    assert [r["step"] for r in resumed] == [r["step"] for r in uninterrupted]
    for a, b in zip(uninterrupted[saved:], resumed[saved:], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
    final, expected = (
        load_file(output / "model.safetensors"),
        load_file(sharded_run / "model.safetensors"),
    )
    for name, tensor in expected.items():
        assert torch.allclose(final[name], tensor, atol=1e-6), name


def test_fsdp_is_for_full_fine_tuning_in_bf16_or_fp32():
    with pytest.raises(TunelabError, match="--distributed fsdp shards full fine-tuning"):
        TrainConfig(method="lora", distributed="fsdp").validate()
    with pytest.raises(TunelabError, match="not fp16"):
        TrainConfig(method="full", distributed="fsdp", precision="fp16").validate()
    with pytest.raises(TunelabError, match="--distributed must be one of auto, ddp, fsdp"):
        TrainConfig(distributed="zero3").validate()


def test_auto_shards_only_full_fine_tuning_that_would_not_fit_one_device(monkeypatch):
    from tunelab.engine import config

    n_parameters = 1_000_000
    needed = n_parameters * FULL_TRAINING_BYTES_PER_PARAMETER
    monkeypatch.setattr(config, "device_memory", lambda device: needed - 1)
    assert TrainConfig(method="full").resolve(12, 256, "cpu", n_parameters).distributed == "fsdp"
    assert TrainConfig(method="lora").resolve(12, 256, "cpu", n_parameters).distributed == "ddp"
    asked = TrainConfig(method="full", distributed="ddp").resolve(12, 256, "cpu", n_parameters)
    assert asked.distributed == "ddp"
    monkeypatch.setattr(config, "device_memory", lambda device: needed)
    assert TrainConfig(method="full").resolve(12, 256, "cpu", n_parameters).distributed == "ddp"


def test_a_checkpoint_from_before_the_setting_resumes_as_ddp(tmp_path):
    resolved = TrainConfig(method="full").resolve(12, 256, "cpu", 1000)
    before = resolved.to_dict()
    del before["distributed"]
    (tmp_path / "checkpoint.json").write_text(
        json.dumps({"config": before, "metadata": {"data_fingerprint": "f"}})
    )
    check_resumable(tmp_path, resolved, "f")  # no mismatch: it trained with ddp
