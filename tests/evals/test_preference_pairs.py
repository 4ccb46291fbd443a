"""`tunelab format --to preference --from-eval RUN_ID`: pairs from a recorded run's wrong
answers, under prompts re-read from the file it evaluated, and only from that same file."""

from __future__ import annotations

import json

import orjson
import pytest

from tunelab.cli import main
from tunelab.data.preference import read_preference_file
from tunelab.evals.items import load_items
from tunelab.registry import Store

QUESTIONS = [("Who wrote Hamlet?", "HUM"), ("Where is Lima?", "LOC"), ("How many legs?", "NUM")]


def chat_line(question: str, label: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "Classify."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": f"<category>{label}</category>"},
        ]
    }


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_bytes(b"".join(orjson.dumps(chat_line(*pair)) + b"\n" for pair in QUESTIONS))
    return path


def record_run(path, answers: dict[str, list[str]], kind: str = "classify") -> str:
    """A finished run of `kind` on `path`: each model's answers, right when they are gold."""
    data = load_items(path)
    with Store() as store:
        run = store.create_eval_run(kind, models=list(answers), data=data.describe(), options={})
        for model, texts in answers.items():
            rows = [
                {
                    "question": item.question,
                    "gold": item.gold,
                    "answer": text,
                    "error": None,
                    "correct": text == item.gold,
                    "source_line": item.source_line,
                }
                for item, text in zip(data.items, texts, strict=True)
            ]
            store.add_eval_outputs(run.id, model, rows)
        store.update_eval_run(run.id, status="succeeded")
    return run.id


def run_format(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["format", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_each_wrong_answer_becomes_a_pair_under_its_prompt(data_file, tmp_path, capsys):
    answers = {
        "base": ["<category>LOC</category>", "<category>LOC</category>", "I am not sure"],
        "tuned": [
            "<category>LOC</category>",
            "<category>LOC</category>",
            "<category>NUM</category>",
        ],
    }
    run_id = record_run(data_file, answers)
    output = tmp_path / "pairs.jsonl"
    argv = ["--to", "preference", "--from-eval", run_id, "--output", str(output), "--json"]
    code, out, _ = run_format(capsys, *argv)
    summary = json.loads(out)
    assert code == 0 and (summary["n_answers"], summary["n_wrong"], summary["n_pairs"]) == (6, 3, 2)
    pairs = read_preference_file(output)  # the trainer's loader accepts the file
    got = [
        (p.messages[-1]["content"], p.preferred[0]["content"], p.non_preferred[0]["content"])
        for p in pairs
    ]
    assert got == [  # the two models' same mistake on Hamlet is one pair
        ("Who wrote Hamlet?", "<category>HUM</category>", "<category>LOC</category>"),
        ("How many legs?", "<category>NUM</category>", "I am not sure"),
    ]
    assert pairs[0].messages[0] == {"role": "system", "content": "Classify."}
    code, _, err = run_format(capsys, *argv)
    assert code != 0 and "--force" in err  # an existing output is kept


def test_a_changed_data_file_makes_no_pairs(data_file, tmp_path, capsys):
    run_id = record_run(data_file, {"m": ["x", "y", "z"]})
    data_file.write_bytes(data_file.read_bytes() + orjson.dumps(chat_line("New?", "HUM")) + b"\n")
    output = tmp_path / "pairs.jsonl"
    argv = ["--to", "preference", "--from-eval", run_id, "--output", str(output)]
    code, _, err = run_format(capsys, *argv)
    assert code != 0 and "eval_data_changed" in err and not output.exists()


def test_a_question_that_differs_from_the_record_makes_no_pairs(data_file, tmp_path, capsys):
    run_id = record_run(data_file, {"m": ["x", "y", "z"]})
    with Store() as store:
        [row] = store.list_eval_outputs(run_id)[:1]
        store.add_eval_outputs(run_id, "m", [{**row.output, "question": "Another?"}])
    argv = ["--to", "preference", "--from-eval", run_id, "-o", str(tmp_path / "p.jsonl")]
    code, _, err = run_format(capsys, *argv)
    assert code != 0 and "eval_data_mismatch" in err


def test_runs_without_right_answers_and_usage_errors(data_file, tmp_path, capsys):
    judged = record_run(data_file, {"m": ["x", "y", "z"]}, kind="judge")
    output = str(tmp_path / "pairs.jsonl")
    code, _, err = run_format(capsys, "--to", "preference", "--from-eval", judged, "-o", output)
    assert code == 2 and "no_gold_answers" in err
    all_right = record_run(
        data_file, {"m": [chat_line(*p)["messages"][-1]["content"] for p in QUESTIONS]}
    )
    code, _, err = run_format(capsys, "--to", "preference", "--from-eval", all_right, "-o", output)
    assert code == 1 and "no_pairs" in err
    assert run_format(capsys, "--from-eval", all_right, "-o", output)[0] == 2
    assert (
        run_format(
            capsys, str(data_file), "--to", "preference", "--from-eval", judged, "-o", output
        )[0]
        == 2
    )
