"""`tunelab validate` and `tunelab analyze` from the command line: exit codes, output, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tunelab.cli import main

FIXTURES = Path(__file__).parent.parent / "fixtures" / "validate"
CLEAN = FIXTURES / "clean.jsonl"


@pytest.fixture
def defects(tmp_path) -> Path:
    """Three blank lines, two invalid JSON lines, one duplicate, among clean examples."""
    lines = CLEAN.read_bytes().splitlines()
    path = tmp_path / "defects.jsonl"
    rows = [lines[0], b"", b"", lines[1], b"{oops", b"", b"nope", lines[0]]
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_clean_file_exits_0(capsys):
    assert main(["validate", str(CLEAN), "--model", "gpt-4o-mini"]) == 0
    out = capsys.readouterr().out
    assert "12 examples, 12 valid" in out and "no errors" in out


def test_errors_exit_1_and_are_grouped_per_code(capsys, defects):
    assert main(["validate", str(defects)]) == 1
    out = capsys.readouterr().out
    assert "blank_line" in out and "2, 3, 6" in out
    assert "invalid_json" in out and "5, 7" in out
    assert "duplicate_example" in out and "duplicate of the example on line" in out
    assert "invalid JSON at column 2" in out
    assert "5 error(s), 1 warning(s)" in out


def test_a_line_that_is_no_json_at_all_is_said_to_be_so_with_its_file_and_line(capsys, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(CLEAN.read_bytes().splitlines()[0] + b"\nnot json\n")
    code, report = run_json(capsys, ["validate", str(path), "--json"])
    [finding] = [f for f in report["findings"] if f["code"] == "invalid_json"]
    assert code == 1 and finding["line"] == 2
    assert finding["message"] == (
        f"line 2 of {path} is not JSON (it begins 'not json'): each line must be one JSON object"
    )  # not orjson's "invalid literal, expected 'null'"


def test_warnings_alone_exit_0(capsys, tmp_path):
    line = CLEAN.read_bytes().splitlines()[0]
    path = tmp_path / "dup.jsonl"
    path.write_bytes(line + b"\n" + line + b"\n")
    assert main(["validate", str(path)]) == 0
    assert "1 warning(s)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "does-not-exist.jsonl"],
        ["validate", str(CLEAN), "--bogus"],
        ["validate"],
        ["validate", str(CLEAN), "--model", "no-such-model"],
        ["analyze", str(CLEAN), "--model", "no-such-model"],
    ],
)
def test_usage_errors_exit_2_without_a_traceback(capsys, argv):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out


def test_validate_json_shape(capsys, defects, tmp_path):
    val = tmp_path / "val.jsonl"
    val.write_bytes(CLEAN.read_bytes().splitlines()[1] + b"\n")
    code, data = run_json(capsys, ["validate", str(defects), "--val", str(val), "--json"])
    assert code == 1
    assert data["by_code"] == {
        "blank_line": 3,
        "invalid_json": 2,
        "in_both_files": 1,
        "duplicate_example": 1,
    }
    assert (data["n_errors"], data["n_warnings"], data["ok"]) == (6, 1, False)
    assert data["val"] == {"file": str(val), "n_examples": 1, "n_valid_examples": 1}
    lines = [(f["code"], f["line"], f["file"]) for f in data["findings"]]
    assert lines == [
        ("blank_line", 2, None),
        ("blank_line", 3, None),
        ("invalid_json", 5, None),
        ("blank_line", 6, None),
        ("invalid_json", 7, None),
        ("duplicate_example", 8, None),
        ("in_both_files", 1, str(val)),
    ]


def test_analyze_json_shape(capsys):
    code, data = run_json(capsys, ["analyze", str(CLEAN), "--model", "gpt-4o-mini", "--json"])
    assert code == 0
    assert (data["n_examples"], data["n_epochs"], data["provider"]) == (12, 8, "openai")
    assert data["billed_tokens"] == data["total_tokens"] * 8
    assert data["estimated_cost_usd"] > 0 and data["costs"]
    assert set(data["distributions"]) == {
        "messages_per_example",
        "tokens_per_example",
        "assistant_tokens_per_example",
    }


def test_analyze_prints_tables(capsys, defects):
    assert main(["analyze", str(defects), "--model", "gpt-3.5-turbo"]) == 0
    out = capsys.readouterr().out
    assert "recommended epochs" in out and "billed tokens" in out
    assert "invalid examples (left out)" in out and "blank_line 3" in out
    assert "gpt-3.5-turbo-0125" in out


def test_analyze_writes_html_and_will_not_overwrite_it(capsys, tmp_path):
    report = tmp_path / "report.html"
    argv = ["analyze", str(CLEAN), "--model", "gpt-4o-mini", "--html", str(report)]
    assert main(argv) == 0
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and "gpt-4o-mini-2024-07-18" in html
    capsys.readouterr()
    assert main(argv) == 1
    assert "output_exists" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


def test_analyze_with_a_prices_override(capsys, tmp_path):
    prices = tmp_path / "p.json"
    prices.write_text(
        json.dumps({"providers": {"openai": {"models": {"gpt-4o-mini-2024-07-18": {"x": 0}}}}})
    )
    argv = ["analyze", str(CLEAN), "--model", "gpt-4o-mini", "--prices", str(prices), "--json"]
    _, data = run_json(capsys, argv)
    # the override adds a method; the default (first) method keeps the shipped price
    methods = [c["method"] for c in data["costs"] if c["model"] == "gpt-4o-mini-2024-07-18"]
    assert methods == ["x", "standard"] or methods == ["standard", "x"]
    assert data["estimated_cost_usd"] == pytest.approx(data["billed_tokens"] / 1e6 * 3.0)


def test_end_to_end_in_a_subprocess(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(orjson.dumps({"messages": [{"role": "user", "content": "hi"}]}) + b"\n")
    entry = "import sys; from tunelab.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", entry, "validate", str(bad), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert json.loads(done.stdout)["by_code"] == {"no_assistant_message": 1}
