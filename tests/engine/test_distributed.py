"""Data-parallel training with torchrun on CPU (gloo): the same run as one process."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from test_cli_train_chat import tensorboard_losses

from tunelab.cli import main
from tunelab.engine.checkpoint import complete_checkpoints, read_checkpoint_meta
from tunelab.engine.distributed import Ranks, torchrun_command
from tunelab.providers.local.ranks import kill_tree  # torchrun, and ranks in their own sessions

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

EXACT = [
    "--learning-rate",
    "1e-2",
    "--lora-rank",
    "4",
    "--lora-dropout",
    "0",
    "--precision",
    "fp32",
    "--lr-scheduler",
    "constant",
    "--warmup-steps",
    "0",
]


@pytest.fixture
def base_dir(tmp_path, tokenizer, make_model):
    directory = tmp_path / "tiny-base"
    make_model().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def train_file(tmp_path, examples):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(example.to_json_line() for example in examples))
    return path


def train_args(train_file, base_dir, output, *extra) -> list[str]:
    return [
        "train",
        "--train",
        str(train_file),
        "--model",
        str(base_dir),
        "--output",
        str(output),
        *EXACT,
        *extra,
    ]


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def ranks_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "tunelab", *args, "--nproc-per-node", "2"]


def assert_same_training(one, two):
    first, second = records(one), records(two)
    assert [r["step"] for r in second] == [r["step"] for r in first]  # rank 0 alone logs
    for a, b in zip(first, second, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        assert b["trained_tokens"] == a["trained_tokens"] and b["tokens"] == a["tokens"]
    adapter_one = load_file(one / "adapter_model.safetensors")
    adapter_two = load_file(two / "adapter_model.safetensors")
    for name, tensor in adapter_one.items():
        assert torch.allclose(adapter_two[name], tensor, atol=1e-5), name


@pytest.mark.slow  # two torchrun processes start (torch and transformers imported twice)
def test_two_processes_train_like_one_at_the_same_global_batch(tmp_path, train_file, base_dir):
    flags = ["--batch-size", "4", "--n-epochs", "2", "--gradient-accumulation-steps", "2"]
    assert main(train_args(train_file, base_dir, tmp_path / "one", *flags)) == 0

    command = ranks_command(
        train_args(train_file, base_dir, tmp_path / "two", *flags, "--report-to", "tensorboard")
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(tmp_path / "one", tmp_path / "two")
    assert "✓" in done.stdout or "trained" in done.stdout.lower()
    # Rank 0 alone reports: one event file, the steps metrics.jsonl holds.
    losses = {r["step"]: r["loss"] for r in records(tmp_path / "two") if "loss" in r}
    assert tensorboard_losses(tmp_path / "two") == pytest.approx(losses, rel=1e-6)


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_result(tmp_path, train_file, base_dir):
    flags = ["--batch-size", "2", "--n-epochs", "4", "--checkpoint-every", "2"]
    assert main(train_args(train_file, base_dir, tmp_path / "one", *flags)) == 0
    two = tmp_path / "two"
    command = ranks_command(train_args(train_file, base_dir, two, *flags))

    running = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not any(read_checkpoint_meta(c)["step"] >= 4 for c in complete_checkpoints(two)):
        assert running.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    kill_tree(running.pid)
    running.wait()
    assert not (two / "tunelab_config.json").exists()  # killed before the end

    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_training(tmp_path / "one", two)


def test_the_launcher_command_and_the_ranks_torchrun_describes(monkeypatch):
    command = torchrun_command(["train", "--output", "x"], 4)
    assert command[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=4"]
    assert "--standalone" in command and command[-5:] == ["-m", "tunelab", "train", "--output", "x"]
    nodes = torchrun_command(["train"], 8, nnodes=2, node_rank=1, rdzv_endpoint="gpu0:29500")
    assert {"--nnodes=2", "--node-rank=1", "--rdzv-endpoint=gpu0:29500"} <= set(nodes)

    assert not Ranks.from_env().active
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ranks = Ranks.from_env()
    assert (ranks.active, ranks.is_main, ranks.device("cuda"), ranks.device("cpu")) == (
        True,
        False,
        "cuda:1",
        "cpu",
    )
    assert ranks.mine(list(range(10))) == [3, 7]


def test_several_machines_need_a_meeting_point(tmp_path, train_file, base_dir, capsys):
    args = train_args(train_file, base_dir, tmp_path / "out", "--nnodes", "2")
    assert main(args) == 2
    assert "--rdzv-endpoint" in capsys.readouterr().err


def test_a_ranks_resume_command_names_the_processes_torchrun_started(train_file, monkeypatch):
    from tunelab.cli.train_cmd import resume_command, train_cmd

    args = [
        "--train",
        str(train_file),
        "--output",
        "out",
        "--method",
        "full",
        "--distributed",
        "fsdp",
    ]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # in a rank, started without --nproc-per-node
    command = resume_command(train_cmd.make_context("train", args))
    assert "--nproc-per-node 4" in command and "--distributed fsdp" in command
    assert command.endswith("--resume")
