"""`eval queries --constrain`: the grammar travels through the provider to the engine, one
per item in schema mode; a provider that cannot follow a grammar refuses it by name."""

from __future__ import annotations

import json

import orjson
import pytest

from tiny import save_tiny_model
from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.evals.items import EvalData, EvalItem
from tunelab.evals.mongo.grammar import query_grammar
from tunelab.evals.mongo.parser import parse_query
from tunelab.evals.mongo.schema import schema_of
from tunelab.evals.mongo.task import answer_grammars
from tunelab.providers.resolve import ChatModel
from tunelab.registry import Store


def item(question: str) -> EvalItem:
    return EvalItem([{"role": "user", "content": question}], "db.c.find({})")


def test_each_mode_gives_the_answers_their_grammar(tmp_path):
    farm = "Collections: farm(Farm_ID)\n\nHow many farms?"
    data = EvalData(tmp_path, "query_pairs", [item(farm), item("No schema here?")], [], "")
    assert answer_grammars(data, "off") is None
    assert answer_grammars(data, "query") == query_grammar(None)
    by_item = answer_grammars(data, "schema")
    assert by_item == [query_grammar(schema_of(data.items[0].messages)), query_grammar(None)]
    with pytest.raises(TunelabError) as refused:
        answer_grammars(data, "loose")
    assert refused.value.code == "invalid_constrain"


def test_a_hosted_model_refuses_a_grammar_by_name(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    model = ChatModel("openai/gpt-4o-mini", "openai", "gpt-4o-mini")
    with pytest.raises(TunelabError) as refused:
        model.answer_batch([[{"role": "user", "content": "hi"}]], grammar=query_grammar(None))
    assert refused.value.code == "unsupported_parameter"
    assert "grammar" in refused.value.message


def test_a_local_model_answers_every_item_in_its_schema(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "tiny")
    pairs = [
        {"db": "farm", "question": "How many farms?", "query": "db.farm.countDocuments({})"},
        {"db": "shop", "question": "Which shops?", "query": "db.shop.find({}, {Name: 1})"},
    ]
    schemas = {
        "farm": "Collections: farm(Farm_ID); city(Status)",
        "shop": "Collections: shop(Name)",
    }
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    (tmp_path / "schemas.json").write_text(json.dumps(schemas))
    capsys.readouterr()
    source = ["--data", str(tmp_path / "pairs.json"), "--system", "", "--context-field", "db"]
    source += ["--context-file", str(tmp_path / "schemas.json")]
    code = main(
        ["eval", "queries", *source, "--model", str(model), "--constrain", "schema", "--json"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    result = orjson.loads(out)
    assert result["options"]["constrain"] == "schema"
    with Store() as store:
        rows = [row.output for row in store.list_eval_outputs(result["id"], str(model))]
    assert len(rows) == 2
    allowed = [{"farm", "city"}, {"shop"}]
    for row, names in zip(rows, allowed, strict=True):
        if row["parsed"]:  # a random model may run out of tokens before its query ends
            assert parse_query(row["answer"]).collection in names
        else:
            assert row["answer"].startswith("db.")
