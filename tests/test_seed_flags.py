"""Seed 004's multi-value flags become tunelab's repeatable ones; other commands are untouched."""

from tunelab.cli.seed_flags import translate_seed_flags


def test_judge_flags_are_rewritten():
    argv = [
        "eval",
        "judge",
        "--evaluation-type",
        "elo",
        "--judge-model",
        "j",
        "--filepaths",
        "a.db",
        "b.db",
        "--traits",
        "x",
        "y",
        "--json",
    ]
    assert translate_seed_flags(argv) == [
        "eval",
        "judge",
        "--mode",
        "pairwise",
        "--judge-model",
        "j",
        "--conversations",
        "a.db",
        "--conversations",
        "b.db",
        "--traits",
        "x",
        "--traits",
        "y",
        "--json",
    ]


def test_generate_ideas_file_is_renamed_and_other_commands_are_left_alone():
    assert translate_seed_flags(["generate-conversations", "--ideas-file", "i.json"]) == [
        "generate-conversations",
        "--ideas",
        "i.json",
    ]
    untouched = ["format", "--traits", "a", "b", "--ideas-file", "x"]
    assert translate_seed_flags(untouched) == untouched
