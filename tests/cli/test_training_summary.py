"""`tunelab train`'s summary: answer accuracy beside token accuracy, and a note when the
recorded curve says the run had more to learn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from tunelab.cli.progress import validation_answers
from tunelab.cli.render import render_training_result
from tunelab.engine.steps import StepRecord
from tunelab.run_advice import more_training_advice, training_answer_accuracy


def curve(*points: tuple[int, float, float | None]) -> list[dict]:
    """Records of (step, training answer accuracy, validation answer accuracy or None)."""
    records = []
    for step, train, val in points:
        record = {"step": step, "loss": 1.0, "answer_accuracy": train}
        if val is not None:
            record |= {"val_loss": 1.0, "val_answer_accuracy": val}
        records.append(record)
    return records


def test_a_validation_accuracy_still_rising_at_the_end_says_more_epochs_may_help():
    advice = more_training_advice(curve((10, 0.2, 0.10), (20, 0.3, 0.25), (30, 0.4, 0.40)))
    assert advice is not None and "still improving" in advice and "more epochs" in advice
    assert "25.0% → 40.0%" in advice


def test_a_flat_end_close_to_training_says_nothing():
    assert more_training_advice(curve((10, 0.5, 0.50), (20, 0.55, 0.51), (30, 0.55, 0.52))) is None


def test_validation_far_below_training_is_said():
    advice = more_training_advice(curve((10, 0.9, 0.40), (15, 0.95, None), (20, 0.97, 0.40)))
    assert advice is not None and "far below training" in advice
    assert "40.0%" in advice and "96.0%" in advice  # the steps since the previous validation


def test_no_validation_answer_accuracy_no_advice():
    assert more_training_advice([]) is None
    assert more_training_advice(curve((10, 0.5, None), (20, 0.9, None))) is None
    dpo = [{"step": 5, "val_loss": 0.6, "val_preference_accuracy": 0.4}]
    assert more_training_advice(dpo) is None


def test_training_answer_accuracy_averages_the_steps_after_a_given_one():
    records = curve((1, 0.0, None), (2, 0.5, None), (3, 1.0, None))
    assert training_answer_accuracy(records, 1) == 0.75
    assert training_answer_accuracy(records, 3) is None


@dataclass
class Result:
    output_dir: Path
    status: str = "succeeded"
    step: int = 30
    total_steps: int = 30
    train_loss: float | None = 0.5
    val_loss: float | None = 0.6
    val_mean_token_accuracy: float | None = 0.916
    val_answer_accuracy: float | None = 0.4
    tokens_per_second: float | None = 100.0
    elapsed_seconds: float = 60.0
    last_checkpoint: Path | None = None


def write_curve(run: Path, records: list[dict]) -> None:
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def test_the_summary_shows_answers_right_before_tokens_right_and_the_note(tmp_path, capsys):
    write_curve(tmp_path / "run", curve((10, 0.2, 0.10), (20, 0.3, 0.25), (30, 0.4, 0.40)))
    render_training_result(Result(tmp_path / "run"), "tunelab train --resume")
    out = capsys.readouterr().out
    assert "answers right 40.0%, tokens right 91.6%" in out
    assert "note:" in out and "still improving at the last validation" in out


def test_a_run_that_levelled_off_has_no_note(tmp_path, capsys):
    write_curve(tmp_path / "run", curve((10, 0.5, 0.50), (20, 0.5, 0.50)))
    render_training_result(Result(tmp_path / "run", val_answer_accuracy=0.5), "…")
    out = capsys.readouterr().out
    assert "answers right 50.0%" in out and "note:" not in out


def test_a_preference_run_shows_no_answer_accuracy(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    result = Result(tmp_path / "run", val_mean_token_accuracy=None, val_answer_accuracy=None)
    render_training_result(result, "…")
    out = capsys.readouterr().out
    assert "val loss 0.6000" in out and "answers right" not in out and "tokens right" not in out


def test_the_progress_line_shows_validation_answer_accuracy():
    record = StepRecord(
        step=3,
        total_steps=10,
        epoch=1,
        loss=1.5,
        mean_token_accuracy=0.9,
        learning_rate=1e-4,
        grad_norm=0.8,
        tokens=120,
        trained_tokens=40,
        tokens_per_second=900.0,
        threads=2,
        elapsed=4.5,
        eta_seconds=12.0,
    ).with_validation(1.2, ("mean_token_accuracy", 0.9), 8, {"answer_accuracy": 0.25})
    assert validation_answers(record) == "  val answers 25%"
