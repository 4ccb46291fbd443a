"""`tunelab train`, `chat` and `export` end to end on a tiny model directory."""

from __future__ import annotations

import csv
import importlib
import io
import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.data.formatter import format_dataset
from tunelab.data.sources import SourceOptions
from tunelab.engine.generate import generate
from tunelab.engine.models import load_base

engine_generate = importlib.import_module("tunelab.engine.generate")
# `tunelab train` imports the engine's trainer when it runs: tests patch it there.
train_module = importlib.import_module("tunelab.engine.trainer")
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

SAMPLE = Path(__file__).parents[2] / "src/tunelab/resources/samples/trec_sample.tsv"
FAST = ["--batch-size", "4", "--n-epochs", "2", "--learning-rate", "1e-2", "--lora-rank", "4"]


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


def run_train(train_file, base_dir, output, *extra) -> int:
    args = ["train", "--train", str(train_file), "--model", str(base_dir), "--output", str(output)]
    return main([*args, *FAST, *extra])


def test_train_then_chat_with_the_output(tmp_path, train_file, base_dir, capsys):
    output = tmp_path / "run"
    assert run_train(train_file, base_dir, output) == 0
    printed = capsys.readouterr().out
    assert "trained 6 steps" in printed and f"tunelab chat {output}" in printed
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert (output / "adapter_model.safetensors").exists()

    assert main(["chat", str(output), "What is the capital of Spain?", "--max-tokens", "6"]) == 0
    answer = capsys.readouterr().out
    assert answer.endswith("\n") and answer.strip()


def test_json_result_names_the_base_model(tmp_path, train_file, base_dir, capsys):
    assert run_train(train_file, base_dir, tmp_path / "run", "--json", "--max-steps", "2") == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["status"], result["step"], result["total_steps"]) == ("succeeded", 2, 2)
    assert result["model"]["name"] == str(base_dir) and result["tokens_per_second"] > 0


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path, train_file, base_dir, capsys):
    output = tmp_path / "run"
    assert run_train(train_file, base_dir, output, "--dry-run") == 0
    printed = capsys.readouterr().out
    assert "12 training" in printed and "6 (3 per epoch)" in printed
    assert "estimated time" in printed

    assert run_train(train_file, base_dir, output, "--dry-run", "--n-epochs", "auto") == 0
    assert "(auto: by the number of examples)" in capsys.readouterr().out

    assert run_train(train_file, base_dir, output, "--dry-run", "--json", "--seed", "auto") == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["total_steps"], plan["config"]["batch_size"], plan["config"]["seed"]) == (6, 4, 42)
    assert plan["train"]["n_examples"] == 12
    assert not output.exists()


def test_an_invalid_training_file_exits_1_before_loading(tmp_path, base_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    good = (
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}'
    )
    bad.write_text(good + "\n" + "{not json\n" + '{"messages": [{"role": "user"}]}\n')

    assert run_train(bad, base_dir, tmp_path / "run") == 1

    err = capsys.readouterr().err
    assert "invalid_training_data" in err and "3 error(s)" in err
    assert "invalid_json" in err  # the findings are summarised
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be an integer"),
        (["--batch-size", "four"], "is not an integer or auto"),
        (["--method", "qlora"], "is not one of lora, full"),
        (["--warmup-ratio", "0.1", "--warmup-steps", "3"], "Can't provide both"),
    ],
)
def test_bad_flags_are_usage_errors(tmp_path, train_file, base_dir, capsys, flags, message):
    assert run_train(train_file, base_dir, tmp_path / "run", *flags) == 2
    assert message in capsys.readouterr().err


def test_every_setting_accepts_auto(tmp_path, train_file, base_dir, capsys):
    autos = [
        "--n-epochs",
        "auto",
        "--batch-size",
        "auto",
        "--learning-rate-multiplier",
        "auto",
        "--max-steps",
        "auto",
        "--seed",
        "auto",
        "--method",
        "auto",
        "--lora-rank",
        "auto",
        "--max-seq-len",
        "auto",
        "--precision",
        "auto",
        "--lora-target-modules",
        "auto",
    ]
    args = ["train", "--train", str(train_file), "--model", str(base_dir)]
    assert main([*args, "--output", str(tmp_path / "run"), *autos, "--dry-run", "--json"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["method"], config["lora_rank"], config["seed"]) == ("lora", 16, 42)
    assert config["batch_size"] == 1 and config["max_seq_len"] == 256


def test_ctrl_c_checkpoints_exits_130_and_the_printed_command_resumes(
    tmp_path, train_file, base_dir, capsys, monkeypatch
):
    real_train = train_module.train

    def interrupted_after_first_step(*args, callback, **kwargs):
        def press_ctrl_c(record):
            callback(record)
            if record.step == 1:
                signal.raise_signal(signal.SIGINT)

        return real_train(*args, callback=press_ctrl_c, **kwargs)

    monkeypatch.setattr(train_module, "train", interrupted_after_first_step)
    # Whatever handled SIGINT before (SIG_IGN under nohup or CI) is put back afterwards.
    handler_before = signal.getsignal(signal.SIGINT)
    output = tmp_path / "run"
    assert run_train(train_file, base_dir, output) == 130
    printed = capsys.readouterr().out
    assert "cancelled at step 1/6" in printed
    assert (output / "checkpoints" / "step-00000001" / "COMPLETE").exists()
    assert not (output / "tunelab_config.json").exists()

    monkeypatch.setattr(train_module, "train", real_train)
    command = printed.split("resume with: ")[1].splitlines()[0]
    argv = shlex.split(command)
    assert argv[:2] == ["tunelab", "train"] and argv[-1] == "--resume"
    assert main(argv[1:]) == 0
    assert "trained 6 steps" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGINT) == handler_before


def test_ctrl_c_during_validation_ends_the_run_at_once_with_a_checkpoint(
    tmp_path, train_file, base_dir, capsys, monkeypatch
):
    from tunelab.data.example import chat

    val_file = tmp_path / "val.jsonl"
    val_file.write_bytes(
        b"".join(chat(f"question {i}?", f"answer {i}").to_json_line() for i in range(40))
    )
    real_train = train_module.train
    batches = []

    def ctrl_c_in_first_validation(*args, on_validation, **kwargs):
        def press_ctrl_c(done, total):
            batches.append(done)
            on_validation(done, total)
            signal.raise_signal(signal.SIGINT)

        return real_train(*args, on_validation=press_ctrl_c, **kwargs)

    monkeypatch.setattr(train_module, "train", ctrl_c_in_first_validation)
    output = tmp_path / "run"
    code = run_train(train_file, base_dir, output, "--val", str(val_file), "--eval-every", "2")
    assert code == 130
    assert batches == [1]  # the pass stopped after the batch that was running
    assert "cancelled at step 2/6" in capsys.readouterr().out
    assert (output / "checkpoints" / "step-00000002" / "COMPLETE").exists()


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, train_file, base_dir, capsys):
    assert run_train(train_file, base_dir, tmp_path / "new", "--resume") == 2
    assert "nothing_to_resume" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_interactive_chat_keeps_the_history(tmp_path, base_dir, capsys, monkeypatch):
    seen = []
    real_stream = engine_generate.stream_chat

    def recording(model, tokenizer, messages, **settings):
        seen.append(list(messages))
        return real_stream(model, tokenizer, messages, **settings)

    monkeypatch.setattr(engine_generate, "stream_chat", recording)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n\nand then?\n/exit\nnot read\n"))

    assert main(["chat", str(base_dir), "--system", "Be brief.", "--max-tokens", "4"]) == 0

    assert len(seen) == 2
    assert [m["role"] for m in seen[1]] == ["system", "user", "assistant", "user"]
    assert seen[1][1]["content"] == "hello" and seen[1][3]["content"] == "and then?"
    assert capsys.readouterr().out.startswith(seen[1][2]["content"] + "\n")


def test_chat_reads_piped_input_until_eof(tmp_path, base_dir):
    """The real command in a subprocess, as a user pipes questions into it."""
    model, tokenizer, _ = load_base(base_dir)
    first = [{"role": "user", "content": "first question"}]
    answer = generate(model, tokenizer, [first], max_new_tokens=3)[0].text
    second = [*first, {"role": "assistant", "content": answer}]
    second.append({"role": "user", "content": "second question"})
    expected = answer + "\n" + generate(model, tokenizer, [second], max_new_tokens=3)[0].text + "\n"
    code = "import sys; from tunelab.cli import main; sys.exit(main(sys.argv[1:]))"

    done = subprocess.run(
        [sys.executable, "-c", code, "chat", str(base_dir), "--max-tokens", "3"],
        input="first question\nsecond question\n",
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == expected


def test_export_cli_writes_a_model_and_refuses_to_overwrite(tmp_path, train_file, base_dir, capsys):
    run = tmp_path / "run"
    assert run_train(train_file, base_dir, run, "--max-steps", "1") == 0
    export = tmp_path / "export"

    assert main(["export", str(run), "--output", str(export)]) == 0
    assert "LoRA merged" in capsys.readouterr().out
    assert (export / "model.safetensors").exists() and (export / "tokenizer.json").exists()
    assert main(["export", str(run), "--output", str(export)]) == 1
    assert "output_exists" in capsys.readouterr().err
    assert main(["export", str(run), "--output", str(export), "--no-merge", "--force"]) == 0
    assert (export / "adapter_model.safetensors").exists()


def test_export_writes_the_precision_asked_for_and_a_model_card(
    tmp_path, train_file, base_dir, capsys
):
    from safetensors import safe_open

    from tunelab.io import file_sha256

    run = tmp_path / "run"
    assert run_train(train_file, base_dir, run, "--max-steps", "1") == 0
    for dtype, expected in (("bf16", "BF16"), ("fp16", "F16")):
        export = tmp_path / f"export-{dtype}"
        assert main(["export", str(run), "-o", str(export), "--dtype", dtype]) == 0
        with safe_open(export / "model.safetensors", "pt") as weights:
            name = next(iter(weights.keys()))
            assert weights.get_slice(name).get_dtype() == expected
        card = (export / "README.md").read_text()
        assert f"base_model: {base_dir.name}" in card  # portable: no path from this machine
        assert file_sha256(train_file) in card and "lora_rank=4" in card
        assert "final training loss" in card and str(tmp_path) not in card
    assert main(["export", "ft:nothing:local:x:y", "-o", str(tmp_path / "x")]) == 2
    assert "model_not_found" in capsys.readouterr().err


def test_training_further_from_a_run_needs_a_new_output(tmp_path, train_file, base_dir, capsys):
    run = tmp_path / "run"
    assert run_train(train_file, base_dir, run, "--max-steps", "1") == 0
    args = ["train", "--train", str(train_file), "--model", str(run), "--max-steps", "1"]

    assert main([*args, "--output", str(run), "--force"]) == 2
    assert "output_is_input" in capsys.readouterr().err
    assert main([*args, "--output", str(tmp_path / "further"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["name"] == str(run)
    assert json.loads((tmp_path / "further" / "tunelab_config.json").read_text())[
        "base_model"
    ] == str(run)


def test_chat_with_an_unknown_model_is_a_usage_error(capsys):
    assert main(["chat", "no-such-model", "hi"]) == 2
    assert "unknown_model" in capsys.readouterr().err


@pytest.mark.slow
def test_fine_tune_smollm2_on_trec_then_chat(tmp_path, smollm2_home, capsys):
    """The bundled model, LoRA, 3 steps on TREC questions formatted by `tunelab format`."""
    format_dataset(
        SAMPLE,
        tmp_path / "train.jsonl",
        kind="classification",
        options=SourceOptions(text_column="text", label_column="label"),
    )
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    (tmp_path / "small.jsonl").write_text("\n".join(lines[:24]) + "\n")
    (tmp_path / "small_val.jsonl").write_text("\n".join(lines[24:32]) + "\n")
    output = tmp_path / "run"

    args = [
        "train",
        "--train",
        str(tmp_path / "small.jsonl"),
        "--val",
        str(tmp_path / "small_val.jsonl"),
    ]
    code = main([*args, "--output", str(output), "--max-steps", "3", "--batch-size", "8", "--json"])

    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "succeeded" and result["step"] == 3
    assert result["model"]["name"] == "smollm2-135m-instruct"
    assert result["val_loss"] is not None
    print(f"\nSmolLM2 LoRA via the CLI: {result['tokens_per_second']:.0f} tokens/s")  # for reports
    with (SAMPLE).open(encoding="utf-8") as handle:
        question = next(csv.DictReader(handle, delimiter="\t"))["text"]
    system = json.loads(lines[0])["messages"][0]["content"]
    assert main(["chat", str(output), question, "--system", system, "--max-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip()


def test_report_to_a_tracker_that_is_not_installed_fails_before_training(
    tmp_path, train_file, base_dir, capsys, monkeypatch
):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)  # wandb isn't here
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    assert run_train(train_file, base_dir, tmp_path / "run", "--report-to", "wandb") == 2
    err = capsys.readouterr().err
    assert "reporter_not_installed" in err and "pip install wandb" in err
    assert not (tmp_path / "run").exists()


def logged_losses(run) -> dict[int, float]:
    """metrics.jsonl's training loss per step."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r.get("loss") is not None}


def tensorboard_losses(run) -> dict[int, float]:
    """The training loss per step as TensorBoard reads it from the run's event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = (run / "tensorboard").glob("events.out.tfevents.*")  # one writer: rank 0's
    board = EventAccumulator(str(events))
    board.Reload()
    return {e.step: e.value for e in board.Scalars("train/loss")}


def test_report_to_tensorboard_writes_each_step_s_loss(tmp_path, train_file, base_dir):
    run = tmp_path / "run"
    assert run_train(train_file, base_dir, run, "--report-to", "tensorboard") == 0
    losses = logged_losses(run)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert tensorboard_losses(run) == pytest.approx(losses, rel=1e-6)  # float32 in the file


def test_report_to_trackio_stores_each_step_s_loss_offline(
    tmp_path, train_file, base_dir, capsys, monkeypatch
):
    """trackio keeps its runs in a local SQLite database (TRACKIO_DIR); read back with its
    own reader. Its banner goes to stderr: stdout stays the JSON result."""
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    capsys.readouterr()
    assert run_train(train_file, base_dir, run, "--report-to", "trackio", "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    from trackio.sqlite_storage import SQLiteStorage

    stored = SQLiteStorage.get_logs("tunelab", "run")
    losses = {row["step"]: row["loss"] for row in stored if "loss" in row}
    assert losses == pytest.approx(logged_losses(run)) and len(losses) == 6


def test_report_to_wandb_logs_every_step(tmp_path, train_file, base_dir, capsys, monkeypatch):
    import types

    calls = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs["project"], kwargs["name"]))
    fake.log = lambda scalars, step: calls.append(("log", step, sorted(scalars)))
    fake.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, "wandb", fake)

    assert run_train(train_file, base_dir, tmp_path / "run", "--report-to", "wandb") == 0
    assert calls[0] == ("init", "tunelab", "run") and calls[-1] == ("finish",)
    logged = [c for c in calls if c[0] == "log"]
    assert [c[1] for c in logged] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "learning_rate", "tokens_per_second"} <= set(logged[0][2])


def test_piped_output_has_no_warnings_and_no_carriage_returns(tmp_path, train_file, base_dir):
    """What a user sees of train, chat and export in a pipe or a log: our lines only."""
    run, export = tmp_path / "run", tmp_path / "export"
    commands = [
        [
            "train",
            "--train",
            str(train_file),
            "-m",
            str(base_dir),
            "-o",
            str(run),
            *FAST,
            "--max-steps",
            "2",
        ],
        ["chat", str(run), "What is the capital of France?", "--max-tokens", "4"],
        ["export", str(run), "-o", str(export)],
    ]
    for argv in commands:
        done = subprocess.run(
            [sys.executable, "-m", "tunelab", *argv], capture_output=True, text=True, timeout=600
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "Warning" not in output and "\r" not in output, output
