"""`tunelab validate` and `tunelab analyze` on preference and reinforcement files: the
detected format, `--method`, the grader's fields, exit codes and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from tunelab.cli import main

USER = {"role": "user", "content": "Which category is 'Who wrote Hamlet?'"}
GOOD = [{"role": "assistant", "content": "<category>HUM</category>"}]
BAD = [{"role": "assistant", "content": "<category>LOC</category>"}]
PAIR = {"input": {"messages": [USER]}, "preferred_output": GOOD, "non_preferred_output": BAD}
ITEM = {"messages": [USER], "reference_answer": "<category>HUM</category>"}


def write(path: Path, records: list) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_validate_detects_a_preference_file_and_names_its_format(capsys, tmp_path):
    path = write(tmp_path / "pairs.jsonl", [PAIR, {**PAIR, "preferred_output": BAD}])
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "format: dpo (detected" in out and "identical_outputs" in out


def test_validate_requires_the_grader_fields(capsys, tmp_path):
    path = write(tmp_path / "items.jsonl", [ITEM, {**ITEM, "label": "HUM"}])
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({"type": "string_check", "reference": "{{ item.label }}"}))
    code, report = run_json(capsys, ["validate", str(path), "--grader", str(grader), "--json"])
    assert code == 1 and report["method"] == "reinforcement"
    assert [(f["code"], f["line"]) for f in report["findings"]] == [("missing_item_field", 1)]
    argv = ["validate", str(path), "--grader-field", "reference_answer", "--json"]
    code, report = run_json(capsys, argv)
    assert (code, report["findings"]) == (0, [])


def test_method_overrides_detection(capsys, tmp_path):
    path = write(tmp_path / "prompts.jsonl", [{"messages": [USER]}])
    code, report = run_json(capsys, ["validate", str(path), "--json"])
    assert (code, report["method"], list(report["by_code"])) == (
        1,
        "supervised",
        ["no_assistant_message"],
    )
    for flag in ("--training-method", "--method"):  # --method: the earlier name, kept
        code, report = run_json(capsys, ["validate", str(path), flag, "reinforcement", "--json"])
        assert (code, report["method"], report["n_errors"]) == (0, "reinforcement", 0)


def test_validate_and_analyze_take_the_training_method_as_train_does(capsys, tmp_path):
    path = write(tmp_path / "prompts.jsonl", [{"messages": [USER]}])
    argv = ["analyze", str(path), "--model", "gpt-4o-mini", "--json"]
    for flag in ("--training-method", "--method"):
        code, analysis = run_json(capsys, [*argv, flag, "reinforcement"])
        assert (code, analysis["method"]) == (0, "reinforcement")
    for command in ("validate", "analyze", "train"):
        assert main([command, "--help"]) == 0
        shown = capsys.readouterr().out
        assert "--training-method" in shown and "supervised|dpo|reinforcement" in shown
        assert "--method [supervised" not in shown
    both = ["validate", str(path), "--training-method", "dpo", "--method", "reinforcement"]
    assert main(both) == 2
    assert "Can't provide both `--training-method` and `--method`" in capsys.readouterr().err


def test_a_mixed_file_asks_for_method(capsys, tmp_path):
    path = write(tmp_path / "mixed.jsonl", [{"messages": [USER, *GOOD]}, ITEM])
    assert main(["validate", str(path)]) == 2
    assert "--training-method" in capsys.readouterr().err


def test_analyze_reports_the_answer_budget(capsys, tmp_path):
    path = write(tmp_path / "items.jsonl", [ITEM])
    argv = ["analyze", str(path), "--model", "gpt-4o-mini", "--max-answer-tokens", "100", "--json"]
    code, analysis = run_json(capsys, argv)
    assert code == 0 and analysis["method"] == "reinforcement"
    assert analysis["total_assistant_tokens"] == 100 and analysis["estimated_cost_usd"] is None


def test_format_to_reinforcement_then_validate(capsys, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps({"question": f"count heads {i}", "query": f"db.h.find({i})"})
            for i in range(5)
        )
        + "\n"
    )
    out = tmp_path / "rl_train.jsonl"
    argv = [
        "format",
        str(pairs),
        "--to",
        "reinforcement",
        "--reference-field",
        "query",
        "--train-ratio",
        "1.0",
        "-o",
        str(out),
        "--json",
    ]
    code, report = run_json(capsys, argv)
    assert (code, report["to"], report["reference_field"], report["n_train"]) == (
        0,
        "reinforcement",
        "query",
        5,
    )
    code, checked = run_json(capsys, ["validate", str(out), "--grader-field", "query", "--json"])
    assert (code, checked["method"], checked["n_valid_examples"]) == (0, "reinforcement", 5)
