"""Fixtures for job tests: a tiny model directory and chat JSONL files built at test time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny import QUESTIONS, save_tiny_model, write_chat_jsonl
from tunelab.cli import main


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture
def train_file(tmp_path) -> Path:
    return write_chat_jsonl(tmp_path / "train.jsonl")


@pytest.fixture
def val_file(tmp_path) -> Path:
    return write_chat_jsonl(tmp_path / "val.jsonl", QUESTIONS[:4])


# Settings that make a tiny run fast and reproducible (learning rate high enough to learn).
FAST = [
    "--batch-size",
    "4",
    "--learning-rate",
    "0.01",
    "--precision",
    "fp32",
    "--lora-rank",
    "4",
    "--lora-dropout",
    "0",
]


@pytest.fixture
def create_job(tiny_model_dir, train_file, capsys):
    """`tunelab jobs create --json` on the tiny model; returns the job object."""
    import orjson

    def create(*flags: str, start: bool = False) -> dict:
        argv = [
            "jobs",
            "create",
            "--model",
            str(tiny_model_dir),
            "--train",
            str(train_file),
            *FAST,
            *flags,
            "--json",
        ]
        if not start:
            argv.append("--no-start")
        capsys.readouterr()
        assert main(argv) == 0, capsys.readouterr().err
        return orjson.loads(capsys.readouterr().out)

    return create
