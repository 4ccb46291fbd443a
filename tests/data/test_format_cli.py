"""`tunelab format` end to end: outputs, split, safety guarantees and exit codes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tunelab.cli import main
from tunelab.data.formatter import default_val_path, format_dataset
from tunelab.data.prompts import ClassificationPrompt
from tunelab.data.sources import SourceOptions

FIXTURES = Path(__file__).parent.parent / "fixtures" / "format"
SHARED = Path("/work/shared/datasets")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_classification(path: Path, per_label: dict[str, int], copies: int = 1) -> Path:
    rows = [f"text {label} {i}\t{label}" for label, n in per_label.items() for i in range(n)]
    path.write_text("text\tlabel\n" + "\n".join(rows * copies) + "\n")
    return path


def build_conversation_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE conversations (id INTEGER PRIMARY KEY, system_prompt TEXT, created_at TEXT);
        CREATE TABLE messages (id INTEGER PRIMARY KEY, conversation_id INTEGER, role TEXT,
                               content TEXT, position INTEGER);
        """
    )
    for conv in range(1, 11):
        conn.execute("INSERT INTO conversations VALUES (?, 'You are kind.', '')", (conv,))
        for position, role in enumerate(["user", "assistant"], start=1):
            conn.execute(
                "INSERT INTO messages (conversation_id, role, content, position) "
                "VALUES (?, ?, ?, ?)",
                (conv, role, f"{role} turn of conversation {conv}", position),
            )
    conn.commit()
    conn.close()
    return path


def test_queries_with_schema_context(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    code = main(
        [
            "format",
            str(FIXTURES / "queries.json"),
            "--train-output",
            str(train),
            "--context-field",
            "db_id",
            "--context-file",
            str(FIXTURES / "collections.json"),
            "--train-ratio",
            "0.67",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "queries (detected" in out
    assert "question=question (detected)" in out
    lines = read_jsonl(train) + read_jsonl(tmp_path / "val.jsonl")
    assert (len(read_jsonl(train)), len(lines)) == (2, 3)
    users = sorted(line["messages"][1]["content"] for line in lines)
    assert users[0].startswith("Collections: farm(Farm_ID, Total_Horses); city(")
    assert users[2] == "Collections: singer(Name, Age)\n\nList the names of singers older than 30."


def test_classification_json_report_is_stratified(tmp_path, capsys):
    source = write_classification(tmp_path / "t.tsv", {"A": 10, "B": 5, "C": 2, "D": 1})
    train = tmp_path / "cls_train.jsonl"
    code = main(["format", str(source), "--train-output", str(train), "--json", "--seed", "7"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "classification"
    assert report["val_output"] == str(tmp_path / "cls_val.jsonl")
    assert report["label_counts"] == {
        "train": {"A": 8, "B": 4, "C": 1, "D": 1},
        "val": {"A": 2, "B": 1, "C": 1},
    }
    prompt = ClassificationPrompt()
    labels = ["A", "B", "C", "D"]
    answers = [prompt.parse_answer(r["messages"][-1]["content"], labels) for r in read_jsonl(train)]
    assert Counter(answers) == report["label_counts"]["train"]


def test_short_template_prompts_list_no_labels_and_the_label_set_is_kept_beside(tmp_path, capsys):
    source = write_classification(tmp_path / "t.tsv", {"A": 10, "B": 5, "C": 2, "D": 1})
    full, short = tmp_path / "full_train.jsonl", tmp_path / "short_train.jsonl"
    assert main(["format", str(source), "--train-output", str(full)]) == 0
    assert main(["format", str(source), "--train-output", str(short), "--template", "short"]) == 0
    assert "short_train.labels.json" in capsys.readouterr().out
    full_users = [r["messages"][1]["content"] for r in read_jsonl(full)]
    short_users = [r["messages"][1]["content"] for r in read_jsonl(short)]
    assert all("<categories>\nA\nB\nC\nD\n</categories>" in u for u in full_users)
    assert all("<categories>" not in u for u in short_users)
    assert all(u.startswith("Classify the text.\n") for u in short_users)
    assert sum(map(len, short_users)) < sum(map(len, full_users))
    # Same split, same answers: only the prompts differ.
    assert [r["messages"][-1] for r in read_jsonl(short)] == [
        r["messages"][-1] for r in read_jsonl(full)
    ]
    # The label set, D included though it is only in training, beside both outputs.
    for name in ("short_train", "short_val"):
        kept = json.loads((tmp_path / f"{name}.labels.json").read_text())
        assert kept == {"labels": ["A", "B", "C", "D"], "template": "short"}
    assert not list(tmp_path.glob("full_*.labels.json"))


def test_a_label_set_file_is_not_overwritten_without_force(tmp_path, capsys):
    source = write_classification(tmp_path / "t.tsv", {"A": 5, "B": 5})
    train = tmp_path / "train.jsonl"
    (tmp_path / "val.labels.json").write_text("mine")
    argv = ["format", str(source), "--train-output", str(train), "--template", "short"]
    assert main(argv) != 0
    assert "[output_exists]" in capsys.readouterr().err
    assert not train.exists() and (tmp_path / "val.labels.json").read_text() == "mine"
    assert main([*argv, "--force"]) == 0
    assert json.loads((tmp_path / "val.labels.json").read_text())["labels"] == ["A", "B"]


def test_duplicates_removed_reported_and_never_in_both_files(tmp_path):
    source = write_classification(tmp_path / "t.tsv", {"A": 20, "B": 20}, copies=3)
    report = format_dataset(source, tmp_path / "train.jsonl", seed=5)
    assert report.n_read == 120
    assert report.n_duplicates == 80
    assert report.duplicates_sample[0] == {"line": 42, "duplicate_of": 2}
    train = (tmp_path / "train.jsonl").read_text().splitlines()
    val = (tmp_path / "val.jsonl").read_text().splitlines()
    assert (len(train), len(val)) == (32, 8)
    assert len(set(train)) == len(train)
    assert not set(train) & set(val)


def test_same_seed_same_files_other_seed_other_split(tmp_path):
    source = write_classification(tmp_path / "t.tsv", {"A": 30, "B": 30})
    runs = {}
    for name, seed in (("one", 1), ("again", 1), ("other", 2)):
        format_dataset(source, tmp_path / f"{name}.jsonl", seed=seed)
        runs[name] = (tmp_path / f"{name}.jsonl").read_bytes()
    assert runs["one"] == runs["again"]
    assert runs["one"] != runs["other"]


def test_conversation_db_default_schema_and_preview(tmp_path, capsys):
    db = build_conversation_db(tmp_path / "chats.db")
    before = digest(db)
    assert main(["format", str(db), "--preview"]) == 0
    out = capsys.readouterr().out
    assert "10 conversations, 20 messages" in out
    assert "You are kind." in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chats.db"]  # preview wrote nothing
    train = tmp_path / "train.jsonl"
    args = ["format", str(db), "--train-output", str(train), "--max-conversations", "5"]
    assert main([*args, "--system-prompt", "Be brief.", "--train-ratio", "1.0"]) == 0
    lines = read_jsonl(train)
    assert len(lines) == 5
    assert all(line["messages"][0] == {"role": "system", "content": "Be brief."} for line in lines)
    assert not (tmp_path / "val.jsonl").exists()
    assert digest(db) == before


def test_conversation_db_mapped_schema_by_flags(tmp_path):
    db = tmp_path / "ui.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE threads (uid TEXT, persona TEXT);
        CREATE TABLE posts (thread TEXT, author TEXT, text TEXT, seq INTEGER);
        INSERT INTO threads VALUES ('t1', 'Pirate');
        INSERT INTO posts VALUES ('t1', 'gpt', 'Arr!', 2), ('t1', 'human', 'Hello', 1);
        """
    )
    conn.commit()
    conn.close()
    train = tmp_path / "out.jsonl"
    flags = {
        "--conversations-table": "threads",
        "--conversation-key-column": "uid",
        "--system-column": "persona",
        "--messages-table": "posts",
        "--conversation-id-column": "thread",
        "--role-column": "author",
        "--content-column": "text",
        "--order-column": "seq",
    }
    args = [item for pair in flags.items() for item in pair]
    assert main(["format", str(db), "--train-output", str(train), *args]) == 0
    assert read_jsonl(train) == [
        {
            "messages": [
                {"role": "system", "content": "Pirate"},
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Arr!"},
            ]
        }
    ]
    assert (tmp_path / "out.val.jsonl").read_text() == ""


@pytest.mark.parametrize(
    "name", ["chat.jsonl", "alpaca.json", "sharegpt.json", "completion.jsonl", "queries.csv"]
)
def test_every_fixture_formats(tmp_path, name):
    train = tmp_path / "train.jsonl"
    assert main(["format", str(FIXTURES / name), "--train-output", str(train)]) == 0
    lines = read_jsonl(train) + read_jsonl(tmp_path / "val.jsonl")
    assert len(lines) == 2
    assert all(line["messages"][-1]["role"] == "assistant" for line in lines)


def test_refuses_to_overwrite_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "query": null}\n')
    train = tmp_path / "train.jsonl"
    train.write_text("keep me\n")
    # The existing output is reported, not the bad record: nothing was read.
    assert main(["format", str(bad), "--train-output", str(train)]) == 1
    assert "[output_exists]" in capsys.readouterr().err
    assert train.read_text() == "keep me\n"
    source = FIXTURES / "completion.jsonl"
    assert main(["format", str(source), "--train-output", str(train)]) == 1
    assert main(["format", str(source), "--train-output", str(train), "--force"]) == 0
    assert train.read_text() != "keep me\n"


def test_refuses_to_write_over_the_input(tmp_path, capsys):
    source = tmp_path / "train.jsonl"
    source.write_bytes((FIXTURES / "completion.jsonl").read_bytes())
    before = digest(source)
    code = main(
        [
            "format",
            str(source),
            "--train-output",
            str(tmp_path / "t.jsonl"),
            "--val-output",
            str(source),
            "--force",
        ]
    )
    assert code == 1
    assert "[output_is_input]" in capsys.readouterr().err
    assert digest(source) == before


def test_input_is_untouched(tmp_path):
    source = tmp_path / "q.json"
    source.write_bytes((FIXTURES / "queries.json").read_bytes())
    before = digest(source)
    format_dataset(source, tmp_path / "train.jsonl", train_ratio=0.5)
    assert digest(source) == before


def test_bad_record_writes_nothing(tmp_path, capsys):
    source = tmp_path / "pairs.jsonl"
    source.write_text(
        '{"question": "a", "query": "x"}\n{"question": "b", "query": "y"}\n{"question": "c"}\n'
    )
    code = main(["format", str(source), "--train-output", str(tmp_path / "out" / "train.jsonl")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{source}:3" in err
    assert "[invalid_record]" in err
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == ["pairs.jsonl"]


@pytest.mark.parametrize(
    "args",
    [
        ["--kind", "poetry"],
        ["--train-ratio", "0"],
        ["--train-ratio", "1.5"],
        ["--text-column", "text", "--kind", "chat"],
        ["--val-output", "v.jsonl", "--train-ratio", "1"],
        ["--no-such-flag"],
    ],
)
def test_usage_errors_exit_2(tmp_path, args):
    source = str(FIXTURES / "completion.jsonl")
    assert main(["format", source, "--train-output", str(tmp_path / "t.jsonl"), *args]) == 2
    assert not (tmp_path / "t.jsonl").exists()


def test_missing_train_output_and_preview_of_non_database_exit_2():
    assert main(["format", str(FIXTURES / "chat.jsonl")]) == 2
    assert main(["format", str(FIXTURES / "chat.jsonl"), "--preview"]) == 2


def test_missing_source_exits_1(tmp_path):
    out = str(tmp_path / "x.jsonl")
    assert main(["format", str(tmp_path / "nope.json"), "--train-output", out]) == 1


def test_default_validation_names():
    assert default_val_path(Path("data/train.jsonl")) == Path("data/val.jsonl")
    assert default_val_path(Path("docs_train.jsonl")) == Path("docs_val.jsonl")
    assert default_val_path(Path("out.jsonl")) == Path("out.val.jsonl")


def test_options_for_the_api(tmp_path):
    report = format_dataset(
        FIXTURES / "classification.csv",
        tmp_path / "train.jsonl",
        tmp_path / "held_out.jsonl",
        options=SourceOptions(text_column="body", label_column="topic", system=""),
        train_ratio=0.5,
    )
    assert report.detection == "--text-column/--label-column was given"
    assert (report.n_train, report.n_val) == (2, 2)
    assert report.system is None
    assert report.to_dict()["label_counts"]["val"] == {"account": 1, "billing": 1}


def test_console_script_end_to_end(tmp_path):
    train = tmp_path / "train.jsonl"
    command = [sys.executable, "-c", "import sys; from tunelab.cli import main; sys.exit(main())"]
    done = subprocess.run(
        [*command, "format", str(FIXTURES / "classification.tsv"), "--train-output", str(train)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "classification" in done.stdout
    assert len(read_jsonl(train)) + len(read_jsonl(tmp_path / "val.jsonl")) == 6


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason="/work/shared/datasets is not on this machine")
def test_full_docspider_and_trec(tmp_path):
    docspider = format_dataset(
        SHARED / "docspider" / "train.json",
        tmp_path / "ds_train.jsonl",
        options=SourceOptions(
            context_field="db_id", context_file=SHARED / "docspider" / "collections.json"
        ),
    )
    assert docspider.n_read == 4043
    assert docspider.n_train + docspider.n_val == 4043 - docspider.n_duplicates
    assert abs(docspider.n_train - 0.8 * (4043 - docspider.n_duplicates)) <= 1
    trec = format_dataset(SHARED / "trec" / "train.tsv", tmp_path / "trec_train.jsonl")
    assert trec.n_read == 5444
    assert trec.n_duplicates == 71  # 5,373 distinct (text, label) rows
    assert set(trec.label_counts["train"]) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    assert set(trec.label_counts["val"]) == set(trec.label_counts["train"])
    lines = (tmp_path / "trec_train.jsonl").read_text().splitlines()
    assert len(lines) == trec.n_train
