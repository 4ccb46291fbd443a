"""`tunelab eval classify/queries`: the pipeline from a source file to a recorded run.

A scripted candidate stands in for a model where the test needs known answers; one test
runs a real (tiny, random) local model through batched generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson
import pytest

from tiny import classification_tsv
from tunelab.cli import main
from tunelab.evals import candidates, classify, runs  # noqa: F401  (imported before patching)
from tunelab.evals.candidates import Answer, Candidate
from tunelab.evals.result import EvaluationResult, TaskResult
from tunelab.evals.runs import headline
from tunelab.registry import EvalRun, Store

TSV = classification_tsv(
    [
        ("What does NASA stand for?", "ABBR"),
        ("Who wrote Hamlet?", "HUM"),
        ("Where is Lima?", "LOC"),
        ("How many legs does a spider have?", "NUM"),
        ("What is the capital of Peru?", "LOC"),
        ("Who painted the Mona Lisa?", "HUM"),
    ]
)


class Scripted(Candidate):
    """Answers from `reply(question, messages)`; records what it was asked."""

    def __init__(self, name: str, reply) -> None:
        self.name, self.reply, self.asked = name, reply, []

    def answer(self, conversations, **settings):
        self.asked.extend(conversations)
        progress = settings.get("progress")
        if progress:
            progress(len(conversations))
        return [Answer(self.reply(_text(c), c)) for c in conversations]


def only_real_models_checked(scripted: dict):
    """`check_models` for a test whose scripted candidates stand in for models: the real
    check for every other name."""
    from tunelab.providers.resolve import check_chat_model

    return lambda names: [check_chat_model(n) for n in names if n not in scripted]


def _text(conversation) -> str:
    user = conversation[-1]["content"]
    found = re.search(r"<text>\n(.*)\n</text>", user, re.DOTALL)
    return found.group(1) if found else user


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "questions.tsv"
    path.write_text(TSV)
    return path


@pytest.fixture
def chat(table, tmp_path, capsys):
    """A chat JSONL validation file: half of the table, formatted by `tunelab format`."""
    chat = tmp_path / "val.jsonl"
    cli(
        capsys,
        "format",
        str(table),
        "--train-output",
        str(tmp_path / "train.jsonl"),
        "--val-output",
        str(chat),
        "--train-ratio",
        "0.5",
    )
    return chat


@pytest.fixture
def scripted(monkeypatch):
    gold = dict(line.split("\t") for line in TSV.strip().splitlines()[1:])
    models = {
        "oracle": Scripted("oracle", lambda text, _: f"<category>{gold[text]}</category>"),
        "half": Scripted(
            "half",
            lambda text, _: (
                f"<category>{gold[text]}</category>"
                if text.startswith("Wh") and "o " in text
                else "I am not sure"
            ),
        ),
    }
    monkeypatch.setattr("tunelab.evals.candidates.open_candidate", lambda name: models[name])
    monkeypatch.setattr("tunelab.evals.candidates.check_models", only_real_models_checked(models))
    return models


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_classify_scores_models_side_by_side_and_records_the_run(table, scripted, capsys, tmp_path):
    code, out, err = cli(
        capsys,
        "eval",
        "classify",
        "--data",
        str(table),
        "--model",
        "oracle",
        "--model",
        "half",
        "--output-dir",
        str(tmp_path / "run"),
        "--json",
    )
    assert code == 0, err
    result = orjson.loads(out)
    oracle, half = result["models"]["oracle"], result["models"]["half"]
    assert oracle["accuracy"] == 1.0 and oracle["invalid_rate"] == 0.0
    # "half" answers the two "Who ..." questions only: 2 of 6 right, 4 invalid.
    assert half["accuracy"] == pytest.approx(2 / 6) and half["invalid_rate"] == pytest.approx(4 / 6)
    [comparison] = result["comparisons"]
    assert comparison["baseline"] == "oracle" and comparison["difference"] == pytest.approx(-4 / 6)
    # The prompt is the one `tunelab format` trains on.
    asked = scripted["oracle"].asked[0]
    assert (
        asked[0]["role"] == "system"
        and "<categories>\nABBR\nHUM\nLOC\nNUM\n</categories>" in asked[-1]["content"]
    )

    saved = orjson.loads((tmp_path / "run" / "result.json").read_bytes())
    assert saved["outputs"]["half"][0]["answer"] == "I am not sure"
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Confusion matrix" in html and "<script" not in html
    with Store() as store:
        run = store.get_eval_run(result["id"])
        outputs = store.list_eval_outputs(result["id"], "half")
    assert run.status == "succeeded" and run.metrics["models"]["oracle"]["accuracy"] == 1.0
    assert len(outputs) == 6 and outputs[0].output["predicted"] is None

    code, out, _ = cli(capsys, "eval", "list", "--json")
    [listed] = orjson.loads(out)["data"]
    assert (
        listed["id"] == result["id"]
        and headline(EvalRun.from_row(listed)).text() == "oracle: 100.0%; half: 33.3%"
    )
    code, out, _ = cli(capsys, "eval", "compare", result["id"], "--json")
    assert {row["model"] for row in orjson.loads(out)["data"]} == {"oracle", "half"}


def test_the_json_output_is_the_stored_result_and_reads_back_from_the_registry(
    table, scripted, capsys, tmp_path
):
    run_dir = tmp_path / "run"
    code, out, err = cli(
        capsys,
        "eval",
        "classify",
        "--data",
        str(table),
        "--model",
        "oracle",
        "--model",
        "half",
        "--output-dir",
        str(run_dir),
        "--json",
    )
    assert code == 0, err
    printed = orjson.loads(out)
    assert list(printed) == [
        "id",
        "kind",
        "created_at",
        "data",
        "options",
        "models_evaluated",
        "labels",
        "method",
        "models",
        "comparisons",
        "json_path",
        "html_path",
    ]
    saved = orjson.loads((run_dir / "result.json").read_bytes())
    answers = saved.pop("outputs")
    assert saved == {k: v for k, v in printed.items() if not k.endswith("_path")}
    assert set(answers) == {"oracle", "half"} and len(answers["half"]) == 6
    # What the registry holds gives back the same result the command printed.
    result = EvaluationResult.from_run(runs.get_run(printed["id"]))
    assert result.to_dict() == printed and result.error is None
    assert result.models == ("oracle", "half") and result.scores["oracle"]["accuracy"] == 1.0


def test_a_pairwise_result_scores_each_model_by_rating_and_record():
    metrics = {
        "judge": "j",
        "ratings": {
            "tuned": {"rating": 1040.0, "low": 1000.0, "high": 1080.0},
            "base": {"rating": 960.0, "low": 920.0, "high": 1000.0},
        },
        "records": {
            "base": {"wins": 1.5, "games": 4},
            "tuned": {"wins": 2.5, "games": 4},
            "silent": {"wins": 0.0, "games": 0},
        },
    }
    result = EvaluationResult(
        id="evalrun-1",
        kind="pairwise",
        created_at=0,
        data={},
        options={},
        models=("base", "tuned", "silent"),
        metrics=metrics,
    )
    assert list(result.scores) == ["base", "tuned", "silent"]
    assert result.scores["tuned"] == {
        "rating": 1040.0,
        "low": 1000.0,
        "high": 1080.0,
        "wins": 2.5,
        "games": 4,
    }
    assert result.scores["silent"] == {"wins": 0.0, "games": 0}  # never rated: no rating made up
    assert "json_path" not in result.to_dict()  # not written yet: no paths


def test_a_task_result_lists_its_figures_in_order_and_optional_ones_only_when_set():
    @dataclass(frozen=True, kw_only=True)
    class Figures(TaskResult):
        models: dict[str, dict]
        note: str | None = None

    whole = Figures(models={"m": {"n": 2}}, answers={"m": [{}, {}]})
    assert whole.metrics == {"models": {"m": {"n": 2}}}  # the answers are stored apart
    cut = Figures(models={}, note="n", answers={}, error="e", partial={"n_items": 2})
    assert list(cut.metrics) == ["models", "note", "partial", "error"]


def test_classify_reads_a_chat_jsonl_validation_file(chat, scripted, capsys):
    code, out, err = cli(
        capsys, "eval", "classify", "--data", str(chat), "--model", "oracle", "--json"
    )
    assert code == 0, err
    result = orjson.loads(out)
    assert result["models"]["oracle"]["accuracy"] == 1.0
    assert result["labels"] == sorted(set(result["labels"]))


def test_a_failed_evaluation_is_recorded_as_failed(table, monkeypatch, capsys):
    def broken(name):
        raise candidates.TunelabError("unknown_model", f"no model {name}")

    monkeypatch.setattr("tunelab.evals.candidates.open_candidate", broken)
    monkeypatch.setattr("tunelab.evals.candidates.check_models", lambda names: None)
    code, _, err = cli(capsys, "eval", "classify", "--data", str(table), "--model", "ghost")
    assert code == 1 and "unknown_model" in err
    with Store() as store:
        [run] = store.list_eval_runs()
    assert run.status == "failed" and "no model ghost" in run.error_message
    failed = EvaluationResult.from_run(run)
    assert "no model ghost" in failed.error and failed.scores == {}


def test_a_real_local_model_answers_through_batched_generation(table, tmp_path, capsys):
    from tiny import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    code, out, err = cli(
        capsys,
        "eval",
        "classify",
        "--data",
        str(table),
        "--model",
        str(model),
        "--method",
        "generate",
        "--json",
    )
    assert code == 0, err
    result = orjson.loads(out)
    metrics = result["models"][str(model)]
    assert result["method"] == metrics["method"] == "generate"
    # A random model does not answer in the format: every answer is invalid, none is guessed.
    assert metrics["n"] == 6 and metrics["accuracy"] + metrics["invalid_rate"] <= 1.0 + 1e-9


def test_label_scoring_is_the_default_and_gives_no_invalid_answer(table, tmp_path, capsys):
    from tiny import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    code, out, err = cli(
        capsys,
        "eval",
        "classify",
        "--data",
        str(table),
        "--model",
        str(model),
        "--output-dir",
        str(tmp_path / "run"),
        "--json",
    )
    assert code == 0, err
    result = orjson.loads(out)
    metrics = result["models"][str(model)]
    assert result["method"] == metrics["method"] == "score" and metrics["normalize"] == "sum"
    assert metrics["invalid_rate"] == 0.0 and metrics["n"] == 6
    saved = orjson.loads((tmp_path / "run" / "result.json").read_bytes())
    assert saved["options"]["method"] == "score"
    first = saved["outputs"][str(model)][0]
    labels = ["ABBR", "HUM", "LOC", "NUM"]
    assert set(first["label_scores"]) == set(labels)
    best = max(labels, key=first["label_scores"].get)
    assert first["predicted"] == best and first["answer"] == f"<category>{best}</category>"
    assert "label scoring" in (tmp_path / "run" / "report.html").read_text()


def test_short_template_data_is_scored_against_the_label_set_format_kept(tmp_path, capsys):
    from tiny import save_tiny_model

    source = tmp_path / "q.tsv"
    source.write_text(TSV)  # ABBR and NUM appear once each: formatted into training only
    val = tmp_path / "val.jsonl"
    cli(
        capsys,
        "format",
        str(source),
        "--train-output",
        str(tmp_path / "train.jsonl"),
        "--train-ratio",
        "0.5",
        "--template",
        "short",
    )
    model = save_tiny_model(tmp_path / "tiny")
    code, out, err = cli(
        capsys,
        "eval",
        "classify",
        "--data",
        str(val),
        "--model",
        str(model),
        "--output-dir",
        str(tmp_path / "run"),
        "--json",
    )
    assert code == 0, err
    result = orjson.loads(out)
    labels = ["ABBR", "HUM", "LOC", "NUM"]
    assert result["labels"] == labels
    saved = orjson.loads((tmp_path / "run" / "result.json").read_bytes())
    for row in saved["outputs"][str(model)]:
        assert "<categories>" not in row["question"]
        assert set(row["label_scores"]) == set(labels) and row["predicted"] in labels
    assert result["models"][str(model)]["invalid_rate"] == 0.0


def test_labels_flag_sets_the_label_set_and_must_hold_every_gold(chat, scripted, capsys):
    code, out, err = cli(
        capsys,
        "eval",
        "classify",
        "--data",
        str(chat),
        "--model",
        "oracle",
        "--labels",
        "LOC, HUM,OTHER",
        "--json",
    )
    assert code == 0, err
    assert orjson.loads(out)["labels"] == ["LOC", "HUM", "OTHER"]
    code, _, err = cli(
        capsys,
        "eval",
        "classify",
        "--data",
        str(chat),
        "--model",
        "oracle",
        "--labels",
        "LOC,OTHER",
    )
    assert code != 0 and "label_not_in_set" in err and "HUM" in err


def test_a_model_without_log_likelihoods_falls_back_to_generation(table, scripted, capsys):
    code, out, err = cli(
        capsys, "eval", "classify", "--data", str(table), "--model", "oracle", "--json"
    )
    assert code == 0, err
    metrics = orjson.loads(out)["models"]["oracle"]
    assert metrics["method"] == "generate" and "answered by generation" in metrics["note"]
    code, out, err = cli(capsys, "eval", "classify", "--data", str(table), "--model", "oracle")
    assert code == 0 and "answered by generation" in err and "generate" in out


QUERIES = [
    {
        "question": "How many heads are older than 56?",
        "query": "db.head.countDocuments({age: {$gt: 56}})",
    },
    {
        "question": "Names of heads by age.",
        "query": "db.head.find({}, {name: 1, _id: 0}).sort({age: 1})",
    },
    {"question": "Heads from Texas?", "query": "db.head.find({state: 'Texas'}, {name: 1, _id: 0})"},
]
HEADS = [
    {"name": "Ann", "age": 60, "state": "Texas"},
    {"name": "Bob", "age": 50, "state": "Ohio"},
    {"name": "Cid", "age": 70, "state": "Texas"},
]


@pytest.mark.parametrize("executed_on", ["documents", "mongodb"])
def test_queries_scores_parse_exact_structural_and_execution(
    executed_on, tmp_path, monkeypatch, capsys
):
    data = tmp_path / "pairs.json"
    data.write_text(orjson.dumps(QUERIES).decode())
    documents = tmp_path / "db"
    documents.mkdir()
    (documents / "head.json").write_text(orjson.dumps(HEADS).decode())
    replies = {
        QUERIES[0]["question"]: "```js\ndb.head.countDocuments({ 'age': { '$gt': 56 } });\n```",
        QUERIES[1]["question"]: "db.head.find({}, {name: 1, _id: 0}).sort({age: -1})",
        QUERIES[2]["question"]: "SELECT name FROM head WHERE state = 'Texas'",
    }
    model = Scripted("m", lambda _text, c: replies[c[-1]["content"]])
    monkeypatch.setattr("tunelab.evals.candidates.open_candidate", lambda name: model)
    monkeypatch.setattr("tunelab.evals.candidates.check_models", only_real_models_checked({"m"}))
    where = ["--documents", str(documents)]
    if executed_on == "mongodb":  # a live database, stood in for by mongomock
        import mongomock

        from tunelab.evals.mongo.live import LiveDatabase

        database = mongomock.MongoClient().quiz
        database.head.insert_many([dict(h) for h in HEADS])
        monkeypatch.setattr(LiveDatabase, "connect", lambda *a, **k: LiveDatabase(database))
        where = ["--mongo-uri", "mongodb://user:secret@localhost:27017/quiz"]
    code, out, err = cli(
        capsys,
        "eval",
        "queries",
        "--data",
        str(data),
        "--model",
        "m",
        "--system",
        "",
        *where,
        "--json",
    )
    assert code == 0, err
    assert list(orjson.loads(out)) == [
        "id",
        "kind",
        "created_at",
        "data",
        "options",
        "models_evaluated",
        "models",
        "notes",
        "json_path",
        "html_path",
    ]
    m = orjson.loads(out)["models"]["m"]
    # 1: same query, other quoting and a code fence: exact, and the same count.
    # 2: sorted the other way: not exact, same documents in another order: no execution match.
    # 3: SQL, not a query: a parse failure.
    assert m["parse_failure_rate"] == pytest.approx(1 / 3)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert 1 / 3 < m["structural_match"] < 2 / 3
    assert m["execution_match"] == pytest.approx(1 / 3)
    assert "secret" not in out


def test_eval_list_shows_no_item_count_for_a_run_that_has_none(capsys):
    with Store() as store:
        failed = store.create_eval_run(
            "judge", models=["m"], data={"path": "db.sqlite", "n_items": None}, options={}
        )
        store.update_eval_run(failed.id, status="failed", error_message="judge unreachable")
    code, out, _ = cli(capsys, "eval", "list")
    [row] = [line for line in out.splitlines() if failed.id in line]
    assert code == 0 and "None" not in out and "—" in row


@pytest.mark.parametrize(
    ("kind", "metrics", "expected"),
    [
        ("classify", {"models": {"a": {"accuracy": 0.5, "macro_f1": 0.4}}}, "a: 50.0%"),
        ("queries", {"models": {"a": {"execution_match": None, "exact_match": 0.25}}}, "a: 25.0%"),
        ("queries", {"models": {"a": {"execution_match": 0.75, "exact_match": 0.25}}}, "a: 75.0%"),
        # Exact match 0% for both hides what moved: every answer parsed, most structure right.
        (
            "queries",
            {
                "models": {
                    "old": {"exact_match": 0.0, "structural_match": 0.1, "parse_failure_rate": 0.6},
                    "new": {"exact_match": 0.0, "structural_match": 0.55, "parse_failure_rate": 0},
                }
            },
            "exact: old 0.0%, new 0.0%; structural: old 10.0%, new 55.0%; "
            "parsed: old 40.0%, new 100.0%",
        ),
        # Only the steps that moved join the headline.
        (
            "queries",
            {
                "models": {
                    "old": {"exact_match": 0.2, "structural_match": 0.5, "parse_failure_rate": 0},
                    "new": {"exact_match": 0.4, "structural_match": 0.5, "parse_failure_rate": 0},
                }
            },
            "old: 20.0%; new: 40.0%",
        ),
        # A judge's mean score of 1.0 is a score, not 100%.
        (
            "judge",
            {"models": {"a": {"mean_score": 1.0}, "b": {"mean_score": 7.25}}},
            "a: 1.00; b: 7.25",
        ),
        (
            "pairwise",
            {"ratings": {"a": {"rating": 1012.4}, "b": {"rating": 987.6}}},
            "a: 1012; b: 988",
        ),
        ("classify", None, ""),
    ],
)
def test_the_api_says_which_metric_heads_each_kind_of_run(kind, metrics, expected):
    run = EvalRun(id="eval-1", kind=kind, status="succeeded", created_at=0, metrics=metrics)
    assert headline(run).text() == expected
