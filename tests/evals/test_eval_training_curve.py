"""The evaluation report shows how each fine-tuned model compared was trained: its loss curve.

A tiny model is fine-tuned by a real local job; the evaluation compares it under its `ft:`
name and its output directory with the base it came from.
"""

from __future__ import annotations

import re

import orjson

from tiny import QUESTIONS, classification_tsv, save_tiny_model, write_chat_jsonl
from tunelab.cli import main
from tunelab.evals.training import training_curves
from tunelab.providers.local import worker
from tunelab.registry import Store

TSV = classification_tsv(
    [
        ("What is the capital of France?", "LOC"),
        ("Who wrote Hamlet?", "HUM"),
        ("How many legs does a spider have?", "NUM"),
        ("Which planet is closest to the sun?", "LOC"),
    ]
)
STEPS = 6
TRAINING = [
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
    "--n-epochs",
    "4",
    "--max-steps",
    str(STEPS),
    "--eval-every",
    "2",
]


def cli(capsys, *argv: str) -> str:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def curves_in(html: str) -> dict[str, dict[str, int]]:
    """Per loss chart in a report (by its title): how many points each polyline has."""
    found = {}
    for title, body in re.findall(r'<svg [^>]*aria-label="([^"]*)"[^>]*>(.*?)</svg>', html):
        lines = re.findall(r'<polyline class="(\w+)" points="([^"]+)"', body)
        if lines:
            found[title] = {cls: len(points.split()) for cls, points in lines}
    return found


def test_the_report_draws_each_fine_tuned_models_loss_curve_and_none_for_its_base(tmp_path, capsys):
    base = save_tiny_model(tmp_path / "tiny-llama")
    train = write_chat_jsonl(tmp_path / "train.jsonl", QUESTIONS[4:])
    val = write_chat_jsonl(tmp_path / "val.jsonl", QUESTIONS[:4])  # none in both files
    job = orjson.loads(
        cli(
            capsys,
            "jobs",
            "create",
            "--model",
            str(base),
            "--train",
            str(train),
            "--val",
            str(val),
            *TRAINING,
            "--no-start",
            "--json",
        )
    )
    assert worker.run_worker(max_jobs=1) == 1
    with Store() as store:
        done = store.get_job(job["id"])
        n_val = sum("val_loss" in m for m in store.list_metrics(job["id"]))
    assert done.status == "succeeded" and n_val >= 2
    output = done.output_dir
    table = tmp_path / "questions.tsv"
    table.write_text(TSV)

    tuned = done.fine_tuned_model
    models = [str(base), tuned, output]
    cli(
        capsys,
        "eval",
        "classify",
        "--data",
        str(table),
        *(a for m in models for a in ("-m", m)),
        "--output-dir",
        str(tmp_path / "run"),
    )

    html = (tmp_path / "run" / "report.html").read_text()
    assert html.count("<h2>Training</h2>") == 1
    assert curves_in(html) == {
        f"training loss: {tuned}": {"train": STEPS, "val": n_val},
        f"training loss: {output}": {"train": STEPS, "val": n_val},
    }
    assert f"from job {job['id']}" in html and f"from {output}/metrics.jsonl" in html
    saved = orjson.loads((tmp_path / "run" / "result.json").read_bytes())
    assert list(saved["training"]) == [tuned, output]  # not the base model
    assert [p["step"] for p in saved["training"][tuned]["metrics"]] == list(range(1, STEPS + 1))


def test_a_report_without_a_fine_tuned_model_has_no_curve(tmp_path, capsys):
    base = save_tiny_model(tmp_path / "tiny-llama")
    table = tmp_path / "questions.tsv"
    table.write_text(TSV)
    cli(
        capsys,
        "eval",
        "classify",
        "--data",
        str(table),
        "-m",
        str(base),
        "--output-dir",
        str(tmp_path / "run"),
    )
    html = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Training</h2>" not in html and "<polyline" not in html
    assert "training" not in orjson.loads((tmp_path / "run" / "result.json").read_bytes())


def test_only_known_training_steps_make_a_curve(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-00000002").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5, "val_loss": 1.7}\n'
        '{"step": 3, "loss": 1.2}\n{"step": 4, "lo'  # a line cut short by a crash
    )
    (tmp_path / "plain").mkdir()
    names = [
        str(run),
        str(run / "checkpoints" / "step-00000002"),
        str(tmp_path / "plain"),
        "gpt-4o-mini",
        "ft:tiny:local:x:unknown",
    ]
    curves = training_curves(names)
    assert list(curves) == names[:2]
    assert curves[names[0]]["metrics"] == [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.5, "val_loss": 1.7},
        {"step": 3, "loss": 1.2},
    ]
    assert [p["step"] for p in curves[names[1]]["metrics"]] == [1, 2]
    assert curves[names[1]]["source"] == str(run / "metrics.jsonl")
