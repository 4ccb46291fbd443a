"""`tunelab generate-conversations` and `tunelab eval judge` end to end, with scripted models.

The candidate models and the judge are scripted stand-ins (the judge prefers answers that
name Paris), so the expected scores and ratings are known.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import orjson
import pytest

import tunelab.evals.conversations
import tunelab.evals.judge.task  # noqa: F401
from fake_upstream import paris_judge
from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.evals.candidates import Answer, Candidate
from tunelab.providers.resolve import check_chat_model


class Scripted(Candidate):
    def __init__(self, name: str, reply) -> None:
        self.name, self.reply = name, reply

    def answer(self, conversations, **settings):
        progress = settings.get("progress")
        if progress:
            progress(len(conversations))
        return [Answer(self.reply(c)) for c in conversations]

    def chat(self, messages, max_tokens=512):
        return self.reply(messages)


# The `--json` output and result.json: the run, then the task's figures in this order.
RUN_KEYS = ["id", "kind", "created_at", "data", "options", "models_evaluated"]
PATH_KEYS = ["json_path", "html_path"]


MODELS = {
    "good": Scripted("good", lambda c: "It is Paris."),
    "vague": Scripted("vague", lambda c: "Somewhere in Europe, I think."),
    "judge": Scripted("judge", paris_judge),
}


@pytest.fixture(autouse=True)
def scripted(monkeypatch):
    for module in (
        "tunelab.evals.conversations",
        "tunelab.evals.judge.task",
        "tunelab.evals.candidates",
    ):
        monkeypatch.setattr(f"{module}.open_candidate", MODELS.__getitem__)
    check = check_chat_model  # scripted names stand in for models; the others are checked
    monkeypatch.setattr(
        "tunelab.evals.candidates.check_models",
        lambda names: [check(n) for n in names if n not in MODELS],
    )


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def databases(tmp_path, capsys):
    ideas = tmp_path / "ideas.json"
    ideas.write_text(
        json.dumps(
            [
                {"idea": "capital of France", "context_1": "a geography quiz"},
                {"idea": "city of the Louvre", "context_1": "a museum tour"},
            ]
        )
    )
    made = {}
    for model in ("good", "vague"):
        made[model] = tmp_path / f"{model}.db"
        code, out, err = cli(
            capsys,
            "generate-conversations",
            "--ideas",
            str(ideas),
            "--model",
            model,
            "--system-prompt",
            "You are a guide.",
            "--user-message-template",
            "In {context_1}: what is the {idea}?",
            "--output",
            str(made[model]),
            "--json",
        )
        assert code == 0, err
        assert orjson.loads(out)["n_conversations"] == 2
    return made


def test_generated_conversations_are_a_database_format_reads(databases, tmp_path, capsys):
    with sqlite3.connect(databases["good"]) as db:
        rows = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert rows[0] == ("user", "In a geography quiz: what is the capital of France?")
    assert rows[1] == ("assistant", "It is Paris.")
    out = tmp_path / "train.jsonl"
    code, _, err = cli(
        capsys, "format", str(databases["good"]), "--train-output", str(out), "--train-ratio", "1.0"
    )
    assert code == 0, err
    first = json.loads(out.read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]


def test_a_missing_template_field_names_it(tmp_path, capsys):
    ideas = tmp_path / "ideas.txt"
    ideas.write_text("capital of France\n")
    code, _, err = cli(
        capsys,
        "generate-conversations",
        "--ideas",
        str(ideas),
        "--model",
        "good",
        "--user-message-template",
        "{idea} for {audience}",
        "--output",
        str(tmp_path / "x.db"),
    )
    assert code == 1 and "template_field_missing" in err and "audience" in err
    assert not (tmp_path / "x.db").exists()


def test_single_mode_scores_each_model_on_each_trait(databases, capsys):
    code, out, err = cli(
        capsys,
        "eval",
        "judge",
        "--judge-model",
        "judge",
        "--conversations",
        str(databases["good"]),
        "--conversations",
        str(databases["vague"]),
        "--traits",
        "helpfulness,authenticity",
        "--json",
    )
    assert code == 0, err
    result = orjson.loads(out)
    assert list(result) == [*RUN_KEYS, "judge", "traits", "models", *PATH_KEYS]
    assert result["models"]["good"]["traits"] == {"helpfulness": 9, "authenticity": 9}
    assert result["models"]["vague"]["mean_score"] == 3
    assert result["models"]["vague"]["n_parse_failures"] == 0


def test_pairwise_mode_ranks_the_better_model_first(databases, capsys):
    code, out, err = cli(
        capsys,
        "eval",
        "judge",
        "--judge-model",
        "judge",
        "--mode",
        "pairwise",
        "--conversations",
        str(databases["vague"]),
        "--conversations",
        str(databases["good"]),
        "--json",
    )
    assert code == 0, err
    result = orjson.loads(out)
    assert list(result) == [
        *RUN_KEYS,
        "judge",
        "traits",
        "n_prompts",
        "ratings",
        "records",
        "n_comparisons",
        "n_verdicts",
        "n_call_failures",
        "n_parse_failures",
        "errors",
        *PATH_KEYS,
    ]
    ratings = result["ratings"]
    assert ratings["good"]["rating"] > ratings["vague"]["rating"]
    assert result["records"]["good"] == {"wins": 2.0, "games": 2}
    html = Path(result["html_path"]).read_text()
    assert "Ratings (Elo scale" in html
    # Runs compared side by side show each model's rating and record.
    code, out, err = cli(capsys, "eval", "compare", result["id"], "--json")
    rows = {row["model"]: row for row in orjson.loads(out)["data"]}
    assert code == 0 and set(rows) == {"good", "vague"}, err
    assert rows["good"]["rating"] > rows["vague"]["rating"] and rows["good"]["wins"] == 2.0


def test_judge_with_models_answering_data_prompts(tmp_path, capsys):
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": "Paris"},
                ]
            }
        )
        + "\n"
    )
    code, out, err = cli(
        capsys,
        "eval",
        "judge",
        "--judge-model",
        "judge",
        "--data",
        str(data),
        "--model",
        "good",
        "--model",
        "vague",
        "--json",
    )
    assert code == 0, err
    models = orjson.loads(out)["models"]
    assert models["good"]["mean_score"] == 9 and models["vague"]["mean_score"] == 3


class Unreachable(Candidate):
    """A hosted judge whose every call fails, as a provider's batch reports a refused socket."""

    name = "down@http://127.0.0.1:9/v1"

    def answer(self, conversations, **settings):
        return [
            Answer("", "error", error="provider_unreachable: connection refused")
            for _ in conversations
        ]


@pytest.mark.parametrize("mode", ["single", "pairwise"])
def test_an_unreachable_judge_is_a_failure_with_its_reason(databases, capsys, tmp_path, mode):
    MODELS["down"] = Unreachable()
    try:
        code, out, err = cli(
            capsys,
            "eval",
            "judge",
            "--judge-model",
            "down",
            "--mode",
            mode,
            "--conversations",
            str(databases["good"]),
            "--conversations",
            str(databases["vague"]),
            "--output-dir",
            str(tmp_path / "run"),
        )
    finally:
        del MODELS["down"]
    assert code == 1
    assert "nothing_scored" in err and "connection refused" in err
    assert "Traceback" not in err and "1000" not in out  # no ratings over zero verdicts
    saved = orjson.loads((tmp_path / "run" / "result.json").read_text())
    assert "connection refused" in saved["error"] and list(saved)[-2:] == ["error", "outputs"]
    if mode == "single":
        assert saved["models"]["good"]["n_call_failures"] == 2
        assert saved["models"]["good"]["n_parse_failures"] == 0
    else:
        assert saved["n_verdicts"] == 0 and saved["ratings"] == {}
    code, out, _ = cli(capsys, "eval", "show", saved["id"], "--json")
    assert code == 0 and orjson.loads(out)["status"] == "failed"


def test_judge_output_shows_items_intervals_and_each_parse_failure_with_its_reason(
    databases, capsys, monkeypatch
):
    def unreadable_for_vague(messages):
        if any("Somewhere in Europe" in m["content"] for m in messages):
            return "I would rather not say."  # no verdict, even when asked again
        return paris_judge(messages)

    monkeypatch.setitem(MODELS, "judge", Scripted("judge", unreadable_for_vague))
    code, out, err = cli(
        capsys,
        "eval",
        "judge",
        "--judge-model",
        "judge",
        "--conversations",
        str(databases["good"]),
        "--conversations",
        str(databases["vague"]),
        "--traits",
        "helpfulness",
    )
    assert code == 0, err
    assert "9.00 (9.0–9.0)" in out and "2/2" in out and "0/2" in out
    assert "judge parse failures (2):" in out
    failures = [line for line in out.splitlines() if line.startswith("  vague, item")]
    assert len(failures) == 2 and all("verdict" in line or "JSON" in line for line in failures)

    run_id = re.search(r"run (\S+):", out).group(1)
    code, shown, _ = cli(capsys, "eval", "show", run_id)
    assert code == 0 and "judge parse failures (2):" in shown and "9.00 (9.0–9.0)" in shown
    html = Path(re.search(r"run \S+: (\S+)", out).group(1)).read_text()
    assert "Judge parse failures (2)" in html and "95% interval" in html


# ----- seed 004's command lines, with only the program name changed -------------------------


def test_seed_004_single_evaluation_command_line_runs_unchanged(databases, capsys):
    code, out, err = cli(
        capsys,
        "eval",
        "judge",
        "--evaluation-type",
        "single",
        "--judge-model",
        "judge",
        "--filepaths",
        str(databases["good"]),
        "--traits",
        "consistency",
        "helpfulness",
        "authenticity",
        "--json",
    )
    assert code == 0, err
    traits = orjson.loads(out)["models"]["good"]["traits"]
    assert traits == {"consistency": 9, "helpfulness": 9, "authenticity": 9}


def test_seed_004_elo_command_line_runs_unchanged(databases, capsys):
    code, out, err = cli(
        capsys,
        "eval",
        "judge",
        "--evaluation-type",
        "elo",
        "--judge-model",
        "judge",
        "--filepaths",
        str(databases["vague"]),
        str(databases["good"]),
        "--traits",
        "consistency",
        "helpfulness",
        "authenticity",
        "--json",
    )
    assert code == 0, err
    ratings = orjson.loads(out)["ratings"]
    assert ratings["good"]["rating"] > ratings["vague"]["rating"]


def test_seed_004_generate_flags_are_accepted(tmp_path, capsys):
    ideas = tmp_path / "ideas_with_contexts.json"
    ideas.write_text(json.dumps([{"idea": "capital of France", "context_1": "a quiz"}]))
    code, _, err = cli(
        capsys,
        "generate-conversations",
        "--ideas-file",
        str(ideas),
        "--model",
        "good",
        "--system-prompt",
        "Your system prompt...",
        "--user-message-template",
        "Template with {idea} and {context_1}",
        "--output",
        str(tmp_path / "chats.db"),
        "--json",
    )
    assert code == 0, err
    with sqlite3.connect(tmp_path / "chats.db") as db:
        [(question,)] = db.execute("SELECT content FROM messages WHERE role = 'user'").fetchall()
    assert question == "Template with capital of France and a quiz"


def test_a_seed_flag_without_values_is_a_usage_error_not_a_crash(capsys):
    code, _, err = cli(capsys, "eval", "judge", "--judge-model", "judge", "--filepaths")
    assert code == 2 and "--conversations" in err and "Traceback" not in err


class Wordy(Scripted):
    """A small local judge that never writes the JSON verdict; it records each call."""

    def __init__(self) -> None:
        super().__init__("wordy", lambda c: "Both answers are fine, I suppose.")
        self.max_tokens: list[int] = []

    def chat(self, messages, max_tokens=512):
        self.max_tokens.append(max_tokens)
        return super().chat(messages, max_tokens)


def test_a_judge_that_gives_no_verdict_is_stopped_early_naming_it(databases, capsys, tmp_path):
    wordy = MODELS["wordy"] = Wordy()
    try:
        code, _, err = cli(
            capsys,
            "eval",
            "judge",
            "--judge-model",
            "wordy",
            "--judge-max-tokens",
            "64",
            "--conversations",
            str(databases["good"]),
            "--conversations",
            str(databases["vague"]),
            "--output-dir",
            str(tmp_path / "run"),
        )
    finally:
        del MODELS["wordy"]
    assert code == 1 and "judge_unreadable" in err and "wordy" in err
    assert "stronger judge" in err and "Traceback" not in err
    assert wordy.max_tokens == [64] * 6  # three answers (each asked twice), not all four


def test_pairwise_stops_early_too_and_a_readable_judge_is_not_stopped(monkeypatch):
    from tunelab.evals.items import EvalItem
    from tunelab.evals.judge.task import AnswerSet, JudgeSetup, judge_pairwise
    from tunelab.evals.judge.verdicts import DEFAULT_TRAITS

    prompts = [[{"role": "user", "content": f"Question {n}?"}] for n in range(4)]
    sets = [
        AnswerSet(name, [EvalItem(p, f"{name} {n}", None, n) for n, p in enumerate(prompts)])
        for name in ("good", "vague")
    ]
    wordy = MODELS["wordy"] = Wordy()
    try:
        with pytest.raises(TunelabError) as stopped:
            judge_pairwise(JudgeSetup("wordy", list(DEFAULT_TRAITS), max_tokens=32), sets)
    finally:
        del MODELS["wordy"]
    assert stopped.value.code == "judge_unreadable" and "wordy" in stopped.value.message
    assert wordy.max_tokens == [32] * 6  # three comparisons, each asked twice in one order
    result = judge_pairwise(JudgeSetup("judge", list(DEFAULT_TRAITS)), sets)
    assert result.n_comparisons == 4 and result.error is None
