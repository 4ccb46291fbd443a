"""`tunelab eval grade`: a grader over recorded samples or a model's answers to
reinforcement items, its figures, the per-item file, and the recorded run."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from tunelab.cli import main
from tunelab.evals import candidates, runs
from tunelab.evals.candidates import Answer, Candidate

CITIES = [("Peru", "Lima"), ("France", "Paris"), ("Japan", "Tokyo"), ("Chile", "Santiago")]
CHECK = {
    "type": "string_check",
    "name": "city",
    "operation": "ilike",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.reference_answer }}",
}


def write_jsonl(path, records) -> str:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return str(path)


@pytest.fixture
def items(tmp_path) -> str:
    return write_jsonl(
        tmp_path / "items.jsonl",
        [
            {
                "messages": [{"role": "user", "content": f"Capital of {country}?"}],
                "reference_answer": city,
            }
            for country, city in CITIES
        ],
    )


def grader_file(tmp_path, spec: dict) -> str:
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(spec))
    return str(path)


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_string_check_over_samples_gives_known_scores_and_is_recorded(items, tmp_path, capsys):
    answers = ["It is lima.", "Paris!", "Kyoto", "Santiago de Chile"]
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"output_text": a} for a in answers])
    output = tmp_path / "grades.jsonl"
    argv = ["eval", "grade", "--grader", grader_file(tmp_path, CHECK), "--data", items]
    code, out, _ = cli(capsys, *argv, "--samples", samples, "--output", str(output), "--json")
    assert code == 0
    result = json.loads(out)
    figures = result["models"][samples]
    assert (figures["mean_score"], figures["pass_rate"], figures["n_errors"]) == (0.75, 0.75, 0)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["answer"], r["passed"]) for r in rows] == list(
        zip(answers, [True, True, False, True], strict=True)
    )
    [run] = runs.list_runs()
    assert (run.kind, run.status, run.models) == ("grade", "succeeded", [samples])
    assert runs.headline(run).values == {samples: 0.75}
    assert "Grader city" in Path(result["html_path"]).read_text()
    code, out, _ = cli(capsys, *argv, "--samples", samples, "--output", str(output))
    assert code != 0 and output.read_text().count("\n") == 4  # kept without --force


def test_multi_grader_means_and_errors_counted_by_kind(items, tmp_path, capsys):
    spec = {
        "type": "multi",
        "name": "both",
        "graders": {
            "city": CHECK,
            "json": {**CHECK, "operation": "eq", "input": "{{ sample.output_json.city }}"},
        },
        "calculate_output": "0.5 * city + 0.5 * json",
    }
    lines = [
        {"output_json": {"city": "Lima"}},
        {"output_json": {"city": "Paris"}},
        {"output_text": "Tokyo"},  # no JSON object: the second grader names nothing
        {"output_json": {"town": "Santiago"}},
    ]
    samples = write_jsonl(tmp_path / "samples.jsonl", lines)
    argv = ["eval", "grade", "--grader", grader_file(tmp_path, spec), "--data", items]
    code, out, _ = cli(capsys, *argv, "--samples", samples, "--json")
    figures = json.loads(out)["models"][samples]
    assert code == 0 and figures["pass_rate"] is None
    assert figures["sub_scores"] == {"city": 1.0, "json": 0.5}
    assert figures["errors_by_kind"] == {"invalid_variable_error": 2}
    code, out, err = cli(capsys, *argv, "--samples", samples)
    assert "invalid_variable_error" in err and "json: mean 0.500" in out


class Echo(Candidate):
    """Answers each question with its last word, and fails on Japan."""

    name = "echo"

    def answer(self, conversations, **settings):
        answers = []
        for messages in conversations:
            question = messages[-1]["content"]
            failed = "Japan" in question
            answers.append(Answer("", error="timed out") if failed else Answer(question))
            settings["progress"] and settings["progress"](1)
        return answers


def test_a_model_answers_the_items_and_failed_calls_count_apart(
    items, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(candidates, "open_candidate", lambda name: Echo())
    monkeypatch.setattr(candidates, "check_models", lambda names: None)
    spec = {**CHECK, "reference": "Capital"}
    argv = ["eval", "grade", "--grader", grader_file(tmp_path, spec), "--data", items]
    code, out, _ = cli(capsys, *argv, "--model", "echo", "--limit", "3", "--json")
    figures = json.loads(out)["models"]["echo"]
    assert code == 0 and figures["n_items"] == 3
    assert (figures["mean_score"], figures["errors_by_kind"]) == (2 / 3, {"no_answer": 1})


def test_model_and_samples_are_one_or_the_other(items, tmp_path, capsys):
    argv = ["eval", "grade", "--grader", grader_file(tmp_path, CHECK), "--data", items]
    assert cli(capsys, *argv)[0] == 2
    assert cli(capsys, *argv, "--model", "m", "--samples", items)[0] == 2


def test_too_few_samples_is_an_error_naming_the_file(items, tmp_path, capsys):
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"output_text": "Lima"}])
    argv = ["eval", "grade", "--grader", grader_file(tmp_path, CHECK), "--data", items]
    code, _, err = cli(capsys, *argv, "--samples", samples)
    assert code == 1 and "samples_too_few" in err


def test_a_real_local_model_answers(items, tmp_path, capsys):
    from tiny import save_tiny_model

    model = str(save_tiny_model(tmp_path / "tiny"))
    spec = {**CHECK, "type": "text_similarity", "evaluation_metric": "fuzzy_match"}
    del spec["operation"]
    argv = ["eval", "grade", "--grader", grader_file(tmp_path, spec), "--data", items]
    code, out, _ = cli(capsys, *argv, "--model", model, "--max-tokens", "4", "--json")
    figures = json.loads(out)["models"][model]
    assert code == 0 and figures["n_items"] == 4 and figures["n_errors"] == 0
    assert 0.0 <= figures["mean_score"] <= 1.0 and figures["pass_rate"] is None
    assert len(runs.run_outputs(json.loads(out)["id"])) == 4
