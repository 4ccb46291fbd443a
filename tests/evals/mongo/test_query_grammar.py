"""The query grammar (`--constrain`): it accepts the gold queries, keeps a schema's names,
and a random tiny model decoding under it writes queries the scorer parses."""

from __future__ import annotations

import json

import llguidance
import pytest

from tiny import build_model, build_tokenizer
from tunelab.data.sources.query_pairs import render_collections
from tunelab.engine.generate import generate
from tunelab.engine.grammar import Constraint, grammar_tokenizer
from tunelab.evals.mongo.grammar import query_grammar
from tunelab.evals.mongo.parser import QueryParseError, parse_query
from tunelab.evals.mongo.schema import SchemaContext, schema_of
from tunelab.samples import sample_path

FARM = SchemaContext.parse("Collections: farm(Farm_ID, Total_Horses); city(City_ID, Status)")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def accepts(tokenizer):
    view = grammar_tokenizer(tokenizer, len(tokenizer))

    def accepts(grammar: str, text: str) -> bool:
        matcher = llguidance.LLMatcher(view, llguidance.LLMatcher.grammar_from_lark(grammar))
        assert not matcher.is_error(), matcher.get_error()
        tokens = view.tokenize_str(text)
        if matcher.validate_tokens(tokens) != len(tokens):
            return False
        matcher.consume_tokens(tokens)
        return matcher.is_accepting()

    return accepts


def parses(text: str) -> bool:
    try:
        parse_query(text)
    except QueryParseError:
        return False
    return True


def docspider_golds() -> list[tuple[str, SchemaContext | None]]:
    """Every shipped DocSpider gold query the scorer parses, with its database's schema."""
    items = json.loads(sample_path("docspider").read_text())
    entries = json.loads(sample_path("docspider_collections").read_text())
    schemas = {e["db_id"]: SchemaContext.parse(render_collections(e)) for e in entries}
    return [(i["query"], schemas[i["db_id"]]) for i in items if parses(i["query"])]


def test_every_parsable_gold_query_is_accepted(accepts):
    golds = docspider_golds()
    assert len(golds) >= 295
    free = query_grammar(None)
    assert [q for q, _ in golds if not accepts(free, q)] == []
    assert [q for q, schema in golds if not accepts(query_grammar(schema), q)] == []


def test_a_schema_keeps_its_collections_and_fields(accepts):
    grammar = query_grammar(FARM)
    assert accepts(grammar, 'db.city.find({Status: {$ne: "Village"}}, {City_ID: 1})')
    assert accepts(grammar, "db.farm.find({}).sort({'Total_Horses': -1}).limit(3)")
    assert accepts(grammar, 'db.city.aggregate([{ $lookup: { from: "farm", as: "f" } }])')
    assert not accepts(grammar, "db.town.find({})")  # no such collection
    assert not accepts(grammar, "db.city.find({Total_Horses: 3})")  # the farm's field
    assert not accepts(grammar, 'db.city.aggregate([{ $lookup: { from: "town" } }])')
    free = query_grammar(None)
    assert accepts(free, "db.town.find({Horses: 3})")


@pytest.mark.parametrize(
    "text",
    [
        "db.city.find({a: 1}) and more",  # text after the query
        "db.city.find({a:  1})",  # two spaces in a row
        "db.city.find({a: 1}",  # unfinished
        "db.city.insertOne({a: 1})",  # not a read query
        '{"collection": "city"}',  # the JSON form: one way of writing is enough
        "db.city.find({a: //x/})",  # a comment to the parser, not a regex
        "db.city.find({}).skip(1).skip(1).skip(1).skip(1).limit(1)",  # five cursor calls
    ],
)
def test_text_the_grammar_refuses(accepts, text):
    assert not accepts(query_grammar(None), text)


def test_schema_of_reads_the_prompt_context():
    messages = [
        {"role": "system", "content": "Translate the user's question into a MongoDB query."},
        {"role": "user", "content": "Collections: farm(Farm_ID, Home Town)\n\nHow many farms?"},
    ]
    schema = schema_of(messages)
    assert schema is not None and schema.fields("farm") == ("Farm_ID", "Home Town")
    assert schema_of([{"role": "user", "content": "How many farms?"}]) is None


@pytest.mark.parametrize("schema", [None, FARM], ids=["query", "schema"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_random_model_answers_under_the_grammar_always_parse(tokenizer, schema, temperature):
    model = build_model(tokenizer, seed=3).eval()
    chats = [[{"role": "user", "content": q}] for q in ("Which farms?", "How many cities?")]
    answers = generate(
        model,
        tokenizer,
        chats * 3,
        max_new_tokens=160,
        temperature=temperature,
        seed=7,
        constraint=Constraint.lark(query_grammar(schema)),
    )
    finished = [a.text for a in answers if a.finish_reason == "stop"]
    assert finished, [a.text for a in answers]
    for text in finished:
        query = parse_query(text)
        if schema is not None:
            assert query.collection in schema.names


@pytest.mark.parametrize("schema", [None, FARM], ids=["query", "schema"])
@pytest.mark.parametrize("max_new_tokens", [16, 40])
def test_a_small_budget_still_ends_in_a_whole_query(tokenizer, schema, max_new_tokens):
    model = build_model(tokenizer, seed=3).eval()
    chats = [[{"role": "user", "content": q}] for q in ("Which farms?", "How many cities?")]
    answers = generate(
        model,
        tokenizer,
        chats * 3,
        max_new_tokens=max_new_tokens,
        temperature=1.5,
        seed=7,
        constraint=Constraint.lark(query_grammar(schema)),
    )
    for answer in answers:
        assert answer.finish_reason == "stop", answer.text
        assert answer.usage.completion_tokens <= max_new_tokens
        parse_query(answer.text)
