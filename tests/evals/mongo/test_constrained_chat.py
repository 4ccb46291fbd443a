"""`tunelab chat --constrain`: a model on this machine answers under the query grammar
(limited to `--schema` in schema mode), and the flags that do not go together are refused
before anything loads."""

from __future__ import annotations

import pytest

from tiny import save_tiny_model
from tunelab.cli import main
from tunelab.evals.mongo.parser import parse_query

SCHEMA = "Collections: head(age, name); department(id)"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("constrained-chat") / "tiny")


def chat(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["chat", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--constrain", "schema", "--schema", SCHEMA], {"head", "department"}),
        (["--constrain", "query"], None),
    ],
)
def test_a_constrained_answer_is_a_query(tiny_model, capsys, flags, names):
    for seed in (1, 2, 3):
        argv = [str(tiny_model), "Oldest head?", *flags, "--max-tokens", "48"]
        code, out, err = chat(capsys, *argv, "--temperature", "1", "--seed", str(seed))
        assert code == 0, err
        query = parse_query(out.strip())  # ends within --max-tokens, and parses
        assert names is None or query.collection in names


@pytest.mark.parametrize(
    ("flags", "code_name"),
    [
        (["--constrain", "schema"], "missing_schema"),
        (["--constrain", "schema", "--schema", "head(age)"], "invalid_schema"),
        (["--schema", SCHEMA], "invalid_schema"),
    ],
)
def test_a_schema_flag_out_of_place_is_a_usage_error(tiny_model, capsys, flags, code_name):
    code, out, err = chat(capsys, str(tiny_model), "Oldest head?", *flags)
    assert (code, out) == (2, "")
    assert code_name in err


def test_labels_and_a_grammar_do_not_go_together(tiny_model, capsys):
    code, _, err = chat(capsys, str(tiny_model), "hi", "--labels", "A,B", "--constrain", "query")
    assert code == 2
    assert "--labels" in err and "--constrain" in err


def test_a_hosted_model_refuses_the_grammar_before_any_request(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    code, out, err = chat(capsys, "openai/gpt-4o-mini", "Oldest head?", "--constrain", "query")
    assert code == 2 and out == ""
    assert "unsupported_parameter" in err and "grammar" in err
