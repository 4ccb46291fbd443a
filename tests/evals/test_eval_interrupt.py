"""Ctrl-C during an evaluation keeps what was scored: the run is recorded as partial, its
result.json and report are written (atomically, as every run's), the command says how many
items were scored and exits 130. A scripted candidate presses Ctrl-C (a real SIGINT) after a
given number of answers."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import orjson
import pytest

from tiny import classification_tsv
from tunelab.cli import main
from tunelab.evals.candidates import Answer, Candidate, check_cancel
from tunelab.evals.items import EvalData, EvalItem
from tunelab.evals.mongo.task import evaluate_queries
from tunelab.registry import Store

LABELS = {
    "Who wrote Hamlet?": "HUM",
    "Where is Lima?": "LOC",
    "What is NASA?": "ABBR",
    "How many legs has a spider?": "NUM",
    "Who painted it?": "HUM",
    "Where is Rome?": "LOC",
}
TSV = classification_tsv(LABELS.items())


class OneByOne(Candidate):
    """Right answers one at a time, as a hosted model gives them; after `interrupt_after`
    answers the user presses Ctrl-C (`signal`) or the studio's Cancel (`cancel.set()`)."""

    def __init__(self, name: str, reply, interrupt_after: int | None = None, how="signal"):
        self.name, self.reply = name, reply
        self.interrupt_after, self.how = interrupt_after, how

    def answer(self, conversations, *, progress=None, cancel=None, **settings):
        done: list[Answer] = []
        for conversation in conversations:
            check_cancel(cancel, done)
            done.append(Answer(self.reply(conversation[-1]["content"])))
            if progress:
                progress(1)
            if len(done) == self.interrupt_after:
                signal.raise_signal(signal.SIGINT) if self.how == "signal" else cancel.set()
        return done


def label_of(question: str) -> str:
    return next(f"<category>{label}</category>" for q, label in LABELS.items() if q in question)


def test_ctrl_c_keeps_the_items_scored_and_exits_130(tmp_path, monkeypatch, capsys):
    table = tmp_path / "questions.tsv"
    table.write_text(TSV)
    models = {
        "base": OneByOne("base", label_of),
        "tuned": OneByOne("tuned", label_of, interrupt_after=2),
    }
    monkeypatch.setattr("tunelab.evals.candidates.open_candidate", lambda name: models[name])
    monkeypatch.setattr("tunelab.evals.candidates.check_models", lambda names: None)
    capsys.readouterr()
    code = main(
        [
            "eval",
            "classify",
            "--data",
            str(table),
            "-m",
            "base",
            "-m",
            "tuned",
            "--method",
            "generate",
            "-o",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 130
    assert "stopping: the items scored so far are kept" in err
    assert "interrupted: cancelled: 2 of 6 items scored by every model (base: 6, tuned: 2)" in err
    saved = orjson.loads((tmp_path / "run" / "result.json").read_bytes())
    assert saved["partial"] == {"n_items": 6, "scored": {"base": 6, "tuned": 2}}
    assert list(saved)[-4:] == ["models", "comparisons", "partial", "outputs"]
    assert len(saved["outputs"]["base"]) == 6 and len(saved["outputs"]["tuned"]) == 2
    assert saved["models"]["tuned"]["n"] == 2 and saved["models"]["tuned"]["accuracy"] == 1.0
    assert saved["comparisons"][0]["n"] == 2  # paired on the items both answered
    assert "partial" in (tmp_path / "run" / "report.html").read_text()
    assert not list((tmp_path / "run").glob("*.tmp"))  # written atomically
    with Store() as store:
        [run] = store.list_eval_runs()
        assert run.status == "partial" and "2 of 6" in run.error_message
        assert len(store.list_eval_outputs(run.id, "tuned")) == 2
    assert main(["eval", "list"]) == 0
    assert "partial" in capsys.readouterr().out


def test_a_cancel_before_the_first_answer_of_a_model_leaves_it_out(monkeypatch):
    items = [
        EvalItem([{"role": "user", "content": f"count {i}"}], "db.c.find({})") for i in range(4)
    ]
    data = EvalData(Path("q.jsonl"), "chat", items, [], "0")
    cancel = threading.Event()
    models = {
        "a": OneByOne("a", lambda q: "db.c.find({})", interrupt_after=4, how="event"),
        "b": OneByOne("b", lambda q: "db.c.find({})"),
    }
    monkeypatch.setattr("tunelab.evals.candidates.open_candidate", lambda name: models[name])
    found = evaluate_queries(data, ["a", "b"], cancel=cancel)
    # "a" finished its 4 answers as the cancel came: it is scored; "b" never started.
    assert found.partial == {"n_items": 4, "scored": {"a": 4, "b": 0}}
    assert list(found.models) == ["a"] and found.models["a"]["exact_match"] == 1.0
    assert list(found.answers) == ["a"] and found.metrics["partial"] == found.partial


@pytest.mark.parametrize("after", [1, 3])
def test_the_api_scores_the_prefix_a_cancel_left(monkeypatch, after):
    items = [EvalItem([{"role": "user", "content": f"q{i}"}], "db.c.find({})") for i in range(4)]
    data = EvalData(Path("q.jsonl"), "chat", items, [], "0")
    cancel = threading.Event()
    only = OneByOne("m", lambda q: "db.c.find({})" if q == "q0" else "nope", after, "event")
    monkeypatch.setattr("tunelab.evals.candidates.open_candidate", lambda name: only)
    found = evaluate_queries(data, ["m"], cancel=cancel)
    assert found.partial["scored"] == {"m": after} and len(found.answers["m"]) == after
    assert found.models["m"]["exact_match"] == pytest.approx(1 / after)
