"""describe_query: the structural summary of MongoDB answers used by `tunelab analyze`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunelab.data.mongo_shape import QueryShape, describe_query

DOCSPIDER = Path(__file__).resolve().parents[3] / "shared/datasets/docspider/train.json"


def test_find_with_projection_and_chained_calls():
    shape = describe_query(
        "db.station.find({}, {name: 1, lat: 1, city: 1}).sort({lat: 1}).limit(1)"
    )
    assert shape == QueryShape(
        method="find",
        collection="station",
        operators=Counter(),
        pipeline_length=None,
        depth=1,
        chained=("sort", "limit"),
    )


def test_aggregate_counts_stages_operators_and_depth():
    shape = describe_query(
        'db.head.aggregate([ { $match: { age: { $gt: 56 } } }, { $count: "total" } ])'
    )
    assert shape.method == "aggregate"
    assert shape.collection == "head"
    assert shape.pipeline_length == 2
    assert shape.operators == Counter({"$match": 1, "$gt": 1, "$count": 1})
    assert shape.depth == 4  # [ { $match: { age: { ... } } } ]


def test_operators_are_counted_each_time_they_are_used():
    shape = describe_query(
        "db.t.aggregate([{$group: {_id: null, a: {$sum: 1}, b: {$sum: '$x'}}}, {$sort: {a: -1}}])"
    )
    assert shape.operators["$sum"] == 2
    assert shape.pipeline_length == 2


def test_text_inside_strings_is_not_structure():
    shape = describe_query(
        """db.t.find({name: "a { $gt [ ] //", note: 'it\\'s $lt }', x: "$price"})"""
    )
    assert shape is not None
    assert shape.operators == Counter()  # "$price" is a field path, not an operator
    assert shape.depth == 1


def test_regex_literals_with_slashes_and_brackets():
    shape = describe_query(
        "db.trip.aggregate([ { $match: { start_date: { $regex: /^8\\// } } }, "
        "{ $match: { name: /a[/]b}/i } } ])"
    )
    assert shape.pipeline_length == 2
    assert shape.operators == Counter({"$match": 2, "$regex": 1})


def test_json_answers_count_quoted_operator_keys_only():
    shape = describe_query('{"$match": {"fiscal_year": "2023", "total": {"$gt": 5}}}')
    assert shape == QueryShape("json", None, Counter({"$match": 1, "$gt": 1}), None, 3)
    pipeline = describe_query(
        '[{"$match": {"a": 1}}, {"$group": {"_id": "$city", "n": {"$sum": 1}}},]'
    )
    assert pipeline.method == "json"
    assert pipeline.pipeline_length == 2  # the trailing comma adds no stage
    assert pipeline.operators == Counter({"$match": 1, "$group": 1, "$sum": 1})


@pytest.mark.parametrize(
    ("text", "method", "collection"),
    [
        (
            'db.getCollection("order items").countDocuments({a: {$gte: 1}});',
            "countDocuments",
            "order items",
        ),
        ('db.people.distinct("city")', "distinct", "people"),
        ("db.t.findOne({d: ISODate('2020-01-01')}) // newest first", "findOne", "t"),
        ("db.t.find({a: 1})\n  .sort({b: -1})\n  .toArray();", "find", "t"),
        ("```javascript\ndb.t.find({a: 1})\n```", "find", "t"),
        ("{}", "json", None),
    ],
)
def test_other_forms(text, method, collection):
    shape = describe_query(text)
    assert (shape.method, shape.collection) == (method, collection)


def test_old_varargs_aggregate_counts_its_arguments_as_stages():
    assert describe_query("db.x.aggregate({$match: {}}, {$limit: 1})").pipeline_length == 2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "LOC",
        "<category>LOC</category>",
        "The query is db.t.find({})",
        "db.t.find({a: 1}) which returns every row",
        "db.t.find({a: 1",  # truncated
        "db.t.find({a: [1})",  # mismatched brackets
        "db.t.find({a: 'unterminated})",
        "db.t.find",
        "db.t.find({}); db.u.find({})",
        "[LOC]",  # a list of words, not a pipeline
        "{hello}",
        "[1, 2, 3]",
    ],
)
def test_answers_that_are_not_queries(text):
    assert describe_query(text) is None


@given(st.text(alphabet="db.find(){}[]$:,\"'/\\ agrt1\n", max_size=60))
def test_never_raises_on_arbitrary_text(text):
    shape = describe_query(text)
    assert shape is None or shape.depth >= 0


@given(st.text(max_size=40))
def test_prefix_db_never_raises(text):
    describe_query("db." + text)
    describe_query("{" + text)
    describe_query("[" + text)


@pytest.mark.slow
@pytest.mark.skipif(not DOCSPIDER.exists(), reason=f"{DOCSPIDER} not present")
def test_every_docspider_query_has_a_shape():
    queries = [item["query"] for item in json.loads(DOCSPIDER.read_text(encoding="utf-8"))]
    assert len(queries) == 4043
    unreadable = [q for q in queries if describe_query(q) is None]
    # The dataset has one truncated query (its pipeline lacks the closing "])").
    assert len(unreadable) == 1, unreadable
    assert unreadable[0].startswith("db.Genre.aggregate(") and not unreadable[0].endswith(")")
    methods = Counter(describe_query(q).method for q in queries if describe_query(q))
    assert methods == Counter({"aggregate": 2792, "find": 1200, "findOne": 50})
