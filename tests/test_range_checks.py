"""Numbers are checked where they enter the CLI: a one-line error, never a traceback deep
in torch or numpy (the server's side is in tests/server/test_security.py)."""

from __future__ import annotations

import pytest

from tiny import save_tiny_model, write_chat_jsonl
from tunelab.cli import main

HUGE = str(2**80)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


@pytest.mark.parametrize(
    "flag", ["--seed", "--n-epochs", "--batch-size", "--max-steps", "--lora-rank", "--eval-every"]
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_train_refuses_out_of_range_integers(capsys, tmp_path, tiny_model, flag, dry_run):
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    argv = [
        "train",
        "--model",
        str(tiny_model),
        "--train",
        str(data),
        "--output",
        str(tmp_path / "run"),
        flag,
        HUGE,
        *(["--dry-run"] if dry_run else []),
    ]
    code, err = run(capsys, *argv)
    assert code == 2 and "[invalid_config]" in err and flag in err
    assert not (tmp_path / "run").exists()


def test_a_training_seed_past_32_bits_is_refused_and_the_largest_accepted(
    capsys, tmp_path, tiny_model
):
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    base = [
        "train",
        "--model",
        str(tiny_model),
        "--train",
        str(data),
        "--output",
        str(tmp_path / "run"),
        "--dry-run",
        "--seed",
    ]
    assert run(capsys, *base, str(2**32))[0] == 2
    assert run(capsys, *base, str(2**32 - 1))[0] == 0


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--learning-rate", "1e308"),
        ("--learning-rate-multiplier", "1e6"),
        ("--weight-decay", "1e9"),
        ("--lora-alpha", "1e300"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False])
def test_train_refuses_settings_that_would_train_a_model_that_answers_nothing(
    capsys, tmp_path, tiny_model, flag, value, dry_run
):
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    output = tmp_path / "run"
    argv = ["train", "--model", str(tiny_model), "--train", str(data), "--output", str(output)]
    code, err = run(capsys, *argv, flag, value, *(["--dry-run"] if dry_run else []))
    assert code == 2 and "[invalid_config]" in err and flag in err and "≤" in err
    assert not output.exists()


@pytest.mark.parametrize("flag", ["--seed", "--max-tokens"])
def test_chat_refuses_out_of_range_numbers_before_loading_anything(capsys, tiny_model, flag):
    code, err = run(capsys, "chat", str(tiny_model), "hello", flag, HUGE)
    assert code == 2 and flag in err and "loading" not in err


def test_jobs_create_refuses_an_out_of_range_seed(capsys, tmp_path, tiny_model):
    data = write_chat_jsonl(tmp_path / "train.jsonl")
    code, err = run(
        capsys,
        "jobs",
        "create",
        "--model",
        str(tiny_model),
        "--train",
        str(data),
        "--seed",
        HUGE,
        "--no-start",
    )
    assert code == 2 and "--seed" in err
    assert run(capsys, "jobs", "list", "--json")[0] == 0


def test_format_names_the_line_that_is_not_utf8(capsys, tmp_path):
    source = tmp_path / "chat.jsonl"
    good = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    source.write_bytes(good * 3000 + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    code, err = run(capsys, "format", str(source), "--train-output", str(tmp_path / "t.jsonl"))
    assert code == 1 and "[not_utf8]" in err and f"{source}:3001:" in err
