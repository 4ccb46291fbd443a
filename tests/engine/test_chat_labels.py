"""`tunelab chat --labels`: a classification model's answer is always one of the labels."""

from __future__ import annotations

import io
import sys

import pytest

from tiny import save_tiny_model
from tunelab.cli import main
from tunelab.data.prompts import ClassificationPrompt, label_set_bytes
from tunelab.engine.models import load_base
from tunelab.engine.score import score_answers
from tunelab.evals import candidates

LABELS = ["ABBR", "HUM", "LOC", "NUM"]
QUESTION = "Who wrote Hamlet?"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def most_likely(model_dir, messages, answers) -> str:
    """The answer with the highest total log-likelihood, computed straight from the engine."""
    model, tokenizer, _ = load_base(model_dir)
    [scores] = score_answers(model, tokenizer, [messages], answers)
    return max(zip(answers, scores, strict=True), key=lambda pair: pair[1].logprob)[0]


def test_the_answer_is_the_most_likely_label_as_trained(tiny_dir, capsys):
    assert main(["chat", str(tiny_dir), QUESTION, "--labels", ",".join(LABELS)]) == 0
    answers = [ClassificationPrompt().answer(label) for label in LABELS]
    expected = most_likely(tiny_dir, [{"role": "user", "content": QUESTION}], answers)
    assert capsys.readouterr().out == expected + "\n"


def test_a_session_answers_labels_with_the_history(tiny_dir, tmp_path, capsys, monkeypatch):
    label_file = tmp_path / "val.labels.json"
    label_file.write_bytes(label_set_bytes(LABELS, ClassificationPrompt()))
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{QUESTION}\nWhere is Lima?\n"))
    argv = ["chat", str(tiny_dir), "--system", "Classify.", "--labels", str(label_file)]
    assert main([*argv, "--bare-label"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first in LABELS and second in LABELS
    history = [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Where is Lima?"},
    ]
    assert second == most_likely(tiny_dir, history, LABELS)


def test_a_model_without_log_likelihoods_is_refused(tiny_dir, capsys, monkeypatch):
    class Hosted(candidates.Candidate):
        name = "hosted"

        def answer(self, conversations, **settings):
            raise AssertionError("nothing is generated")

    monkeypatch.setattr(candidates, "open_candidate", lambda name: Hosted())
    assert main(["chat", str(tiny_dir), QUESTION, "--labels", "A,B"]) == 2
    assert "no_logprobs" in capsys.readouterr().err


def test_fewer_than_two_labels_is_a_usage_error(tiny_dir, capsys):
    assert main(["chat", str(tiny_dir), QUESTION, "--labels", "A, ,A"]) == 2
    assert "at least two distinct labels" in capsys.readouterr().err
