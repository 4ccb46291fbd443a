"""The embedded executor: MongoDB semantics on small hand-built collections, and results_match."""

from __future__ import annotations

import copy
import json

import pytest
from mongo_documents import ITEMS, ORDERS

from tunelab.evals.mongo.executor import UnsupportedQuery, execute, results_match
from tunelab.evals.mongo.parser import MongoQuery, QueryParseError, parse_query
from tunelab.samples import sample_path

PEOPLE = [
    {
        "_id": 1,
        "name": "Ann",
        "age": 30,
        "tags": ["a", "b"],
        "address": {"city": "Paris", "zip": "75001"},
        "scores": [{"subject": "math", "score": 90}, {"subject": "art", "score": 60}],
    },
    {
        "_id": 2,
        "name": "bob",
        "age": 25.0,
        "tags": ["b"],
        "address": {"city": "Lyon"},
        "scores": [{"subject": "math", "score": 40}],
    },
    {"_id": 3, "name": "Cy", "age": None, "tags": [], "address": {"city": "Paris"}},
    {"_id": 4, "name": "Dee", "age": "40", "tags": "a"},
    {"_id": 5, "name": "Eve"},
]
DB = {"people": PEOPLE, "orders": ORDERS, "items": ITEMS, "banned": [{"name": "bob"}]}


def run(text: str):
    return execute(parse_query(text), DB)


def ids(text: str) -> list:
    return [document["_id"] for document in run(text)]


@pytest.mark.parametrize(
    ("query_filter", "expected"),
    [
        ("{age: 25}", [2]),  # 25.0 == 25
        ("{age: {$gt: 20}}", [1, 2]),  # "40" is a string: no match across types
        ("{age: {$gte: '3'}}", [4]),
        ("{age: null}", [3, 5]),  # null and missing
        ("{age: {$ne: null}}", [1, 2, 4]),
        ("{age: {$exists: false}}", [5]),
        ("{age: {$in: [30, '40']}}", [1, 4]),
        ("{age: {$nin: [30, null]}}", [2, 4]),
        ("{age: {$type: 'string'}}", [4]),
        ("{age: {$not: {$gt: 26}}}", [2, 3, 4, 5]),
        ("{$or: [{age: 30}, {name: 'Eve'}]}", [1, 5]),
        ("{$and: [{tags: 'b'}, {age: {$lt: 30}}]}", [2]),
        ("{$nor: [{tags: 'a'}, {age: null}]}", [2]),
        ("{$expr: {$gt: ['$age', 26]}}", [1, 4]),  # expressions order across types
    ],
)
def test_comparison_and_logical_operators(query_filter, expected):
    assert ids(f"db.people.find({query_filter})") == expected


@pytest.mark.parametrize(
    ("query_filter", "expected"),
    [
        ("{tags: 'a'}", [1, 4]),  # an array element, or the value itself
        ("{tags: ['b']}", [2]),  # the whole array
        ("{tags: {$size: 0}}", [3]),
        ("{tags: {$all: ['a', 'b']}}", [1]),
        ("{tags: {$in: ['b', 'z']}}", [1, 2]),
        ("{tags: {$nin: ['b']}}", [3, 4, 5]),
        ("{'address.city': 'Paris'}", [1, 3]),
        ("{'address.zip': {$exists: true}}", [1]),
        ("{'scores.subject': 'art'}", [1]),
        ("{'scores.score': {$gt: 80}}", [1]),
        ("{'scores.0.subject': 'math'}", [1, 2]),
        # Conditions on a path through an array may hold in different elements...
        ("{'scores.subject': 'art', 'scores.score': 90}", [1]),
        # ...unless $elemMatch asks for one element satisfying all of them.
        ("{scores: {$elemMatch: {subject: 'art', score: 90}}}", []),
        ("{scores: {$elemMatch: {subject: 'math', score: {$lt: 50}}}}", [2]),
        ("{'scores.score': {$elemMatch: {$gte: 50, $lt: 70}}}", []),  # scores are not arrays
        ("{name: /^b/i}", [2]),
        ("{name: {$regex: '^B', $options: 'i'}}", [2]),
        ("{name: {$regex: /^b/}}", [2]),
        ("{name: {$not: /^[A-C]/}}", [2, 4, 5]),
        ("{name: {$in: [/^A/, 'Eve']}}", [1, 5]),
    ],
)
def test_arrays_dotted_paths_and_regexes(query_filter, expected):
    assert ids(f"db.people.find({query_filter})") == expected


def test_sort_orders_types_null_then_numbers_then_strings():
    assert ids("db.people.find().sort({age: 1})") == [3, 5, 2, 1, 4]
    assert ids("db.people.find().sort({age: -1})") == [4, 1, 2, 3, 5]


def test_sort_by_an_array_uses_its_smallest_or_largest_element():
    # ascending: [] < missing (null) < "a" (1 by min, 4) < "b"
    assert ids("db.people.find().sort({tags: 1})") == [3, 5, 1, 4, 2]
    assert ids("db.people.find().sort({tags: -1})") == [1, 2, 4, 5, 3]


def test_multi_key_sort_skip_and_limit():
    assert ids("db.people.find().sort({'address.city': 1, name: -1})") == [5, 4, 2, 3, 1]
    assert ids("db.people.find().sort({_id: -1}).skip(1).limit(2)") == [4, 3]


def test_count_and_distinct():
    assert run("db.people.countDocuments({tags: 'b'})") == 2
    assert run("db.people.find({age: null}).count()") == 2
    assert run("db.people.distinct('tags')") == ["a", "b"]  # arrays give their elements
    assert run("db.people.distinct('address.city', {_id: {$gt: 1}})") == ["Lyon", "Paris"]


def test_find_projections():
    assert run("db.people.find({_id: 2}, {name: 1})") == [{"_id": 2, "name": "bob"}]
    assert run("db.people.find({_id: 2}, {name: 1, _id: 0})") == [{"name": "bob"}]
    assert run("db.people.find({_id: 4}, {tags: 0, age: 0})") == [{"_id": 4, "name": "Dee"}]
    assert run("db.people.find({_id: {$lt: 4}}, {'address.city': 1, _id: 0})") == [
        {"address": {"city": "Paris"}},
        {"address": {"city": "Lyon"}},
        {"address": {"city": "Paris"}},
    ]
    assert run("db.people.find({_id: 1}, {'scores.score': 1, _id: 0})") == [
        {"scores": [{"score": 90}, {"score": 60}]}
    ]
    assert run("db.people.find({_id: 5}, {name: 1, age: 1})") == [{"_id": 5, "name": "Eve"}]
    assert run("db.people.find({_id: 1}, {n: {$toUpper: '$name'}, _id: 0})") == [{"n": "ANN"}]


def test_group_accumulators():
    result = run(
        "db.orders.aggregate([{$group: {_id: '$store', n: {$sum: 1}, qty: {$sum: '$qty'},"
        " avgPrice: {$avg: '$price'}, maxPrice: {$max: '$price'}, minPrice: {$min: '$price'},"
        " items: {$push: '$item'}, first: {$first: '$item'}, last: {$last: '$price'},"
        " kinds: {$addToSet: '$item'}, c: {$count: {}}}}])"
    )
    assert result == [
        {
            "_id": "A",
            "n": 2,
            "qty": 5,
            "avgPrice": 1.5,
            "maxPrice": 1.5,
            "minPrice": 1.5,
            "items": ["pen", "pad"],
            "first": "pen",
            "last": None,
            "kinds": ["pen", "pad"],
            "c": 2,
        },
        {
            "_id": "B",
            "n": 2,
            "qty": 6,
            "avgPrice": 5.75,
            "maxPrice": 10,
            "minPrice": 1.5,
            "items": ["ink", "pen"],
            "first": "ink",
            "last": 1.5,
            "kinds": ["ink", "pen"],
            "c": 2,
        },
    ]


def test_group_by_null_by_a_compound_key_and_on_no_input():
    assert run("db.orders.aggregate([{$group: {_id: null, total: {$sum: '$qty'}}}])") == [
        {"_id": None, "total": 11}
    ]
    compound = run("db.orders.aggregate([{$group: {_id: {item: '$item', s: '$store'}}}])")
    assert [g["_id"] for g in compound] == [
        {"item": "pen", "s": "A"},
        {"item": "ink", "s": "B"},
        {"item": "pen", "s": "B"},
        {"item": "pad", "s": "A"},
    ]
    assert (
        run("db.orders.aggregate([{$match: {qty: 99}}, {$group: {_id: null, n: {$sum: 1}}}])") == []
    )
    assert run("db.orders.aggregate([{$match: {qty: 99}}, {$count: 'n'}])") == []
    assert run("db.orders.aggregate([{$match: {qty: {$gt: 1}}}, {$count: 'n'}])") == [{"n": 3}]


def test_unwind():
    unwound = run("db.people.aggregate([{$unwind: '$tags'}, {$project: {tags: 1}}])")
    assert unwound == [
        {"_id": 1, "tags": "a"},
        {"_id": 1, "tags": "b"},
        {"_id": 2, "tags": "b"},
        {"_id": 4, "tags": "a"},  # a single value unwinds as itself; [] and missing are dropped
    ]
    kept = run(
        "db.people.aggregate([{$unwind: {path: '$tags', preserveNullAndEmptyArrays: true}},"
        " {$project: {tags: 1}}])"
    )
    assert kept == [*unwound[:3], {"_id": 3}, {"_id": 4, "tags": "a"}, {"_id": 5}]


def test_lookup_by_fields_and_by_pipeline():
    joined = run(
        "db.orders.aggregate([{$lookup: {from: 'items', localField: 'item', foreignField: 'sku',"
        " as: 'info'}}, {$project: {colors: '$info.color', n: {$size: '$info'}}}])"
    )
    assert joined == [
        {"_id": 1, "colors": ["blue", "red"], "n": 2},
        {"_id": 2, "colors": ["black"], "n": 1},
        {"_id": 3, "colors": ["blue", "red"], "n": 2},
        {"_id": 4, "colors": [], "n": 0},
    ]
    unmatched = run(
        "db.orders.aggregate([{$lookup: {from: 'items', localField: 'item', foreignField: 'sku',"
        " as: 'info'}}, {$match: {info: {$size: 0}}}])"
    )
    assert [d["_id"] for d in unmatched] == [4]
    by_pipeline = run(
        "db.orders.aggregate([{$match: {_id: 1}}, {$lookup: {from: 'orders', let: {p: '$price'},"
        " pipeline: [{$match: {$expr: {$eq: ['$price', '$$p']}}}, {$project: {_id: 1}}],"
        " as: 'same'}}, {$project: {same: 1, _id: 0}}])"
    )
    assert by_pipeline == [{"same": [{"_id": 1}, {"_id": 3}]}]


def test_project_expressions():
    result = run(
        "db.orders.aggregate([{$match: {_id: {$in: [2, 4]}}}, {$project: {_id: 0,"
        " label: {$concat: [{$toUpper: '$item'}, '-', {$toLower: '$store'}]},"
        " total: {$multiply: ['$qty', '$price']}, plus: {$add: ['$qty', 1, 0.5]},"
        " minus: {$subtract: ['$qty', 1]}, half: {$divide: ['$qty', 2]},"
        " price: {$ifNull: ['$price', 0]}, big: {$cond: [{$gte: ['$qty', 3]}, 'yes', 'no']},"
        " small: {$cond: {if: {$lt: ['$qty', 2]}, then: true, else: false}}, store: '$store'}}])"
    )
    assert result == [
        {
            "label": "INK-b",
            "total": 10,
            "plus": 2.5,
            "minus": 0,
            "half": 0.5,
            "price": 10,
            "big": "no",
            "small": True,
            "store": "B",
        },
        {
            "label": "PAD-a",
            "total": None,
            "plus": 4.5,
            "minus": 2,
            "half": 1.5,
            "price": 0,
            "big": "yes",
            "small": False,
            "store": "A",
        },
    ]


def test_other_stages():
    assert run("db.orders.aggregate([{$sortByCount: '$item'}])") == [
        {"_id": "pen", "count": 2},
        {"_id": "ink", "count": 1},
        {"_id": "pad", "count": 1},
    ]
    added = run(
        "db.orders.aggregate([{$addFields: {cost: {$multiply: ['$qty', 2]}}},"
        " {$set: {qty: '$$REMOVE'}}, {$limit: 1}])"
    )
    assert added == [{"_id": 1, "item": "pen", "price": 1.5, "store": "A", "cost": 4}]
    paged = run(
        "db.orders.aggregate([{$sort: {qty: -1}}, {$skip: 1}, {$limit: 2}, {$project: {qty: 1}}])"
    )
    assert paged == [{"_id": 4, "qty": 3}, {"_id": 1, "qty": 2}]
    assert run(
        "db.people.aggregate([{$match: {_id: 1}}, {$replaceRoot: {newRoot: '$address'}}])"
    ) == [{"city": "Paris", "zip": "75001"}]
    union = run(
        "db.banned.aggregate([{$unionWith: {coll: 'items',"
        " pipeline: [{$project: {_id: 0, name: '$sku'}}]}}])"
    )
    assert union == [{"name": "bob"}, {"name": "pen"}, {"name": "pen"}, {"name": "ink"}]
    facets = run(
        "db.orders.aggregate([{$facet: {n: [{$count: 'n'}],"
        " top: [{$sort: {qty: -1}}, {$limit: 1}, {$project: {_id: 1}}]}}])"
    )
    assert facets == [{"n": [{"n": 4}], "top": [{"_id": 3}]}]


def test_sub_queries_run_first():
    assert ids("db.people.find({name: {$nin: db.banned.distinct('name')}})") == [1, 3, 4, 5]
    assert ids("db.orders.find({qty: {$gt: db.orders.findOne({item: 'ink'}).qty}})") == [1, 3, 4]
    oldest = "db.orders.aggregate([{$group: {_id: null, m: {$max: '$qty'}}}]).toArray()[0].m"
    assert ids(f"db.orders.find({{qty: {oldest}}})") == [3]


def test_missing_collection_is_empty_and_inputs_are_not_modified():
    before = copy.deepcopy(DB)
    run(
        "db.people.aggregate([{$unwind: '$scores'},"
        " {$set: {'scores.score': 0, 'address.city': 'X'}},"
        " {$lookup: {from: 'people', localField: '_id', foreignField: '_id', as: 'me'}}])"
    )
    run("db.people.find({}, {'address.zip': 0}).sort({name: 1})")
    assert before == DB
    assert run("db.nothing.find()") == []
    assert run("db.nothing.countDocuments()") == 0


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("db.people.find({$where: 'this.age > 1'})", "$where"),
        ("db.people.find({age: {$near: [1, 2]}})", "$near"),
        ("db.people.aggregate([{$bucket: {groupBy: '$age', boundaries: [0, 50]}}])", "$bucket"),
        ("db.people.aggregate([{$project: {d: {$dateToString: {date: '$d'}}}}])", "$dateToString"),
        ("db.people.aggregate([{$group: {_id: null, s: {$stdDevPop: '$age'}}}])", "$stdDevPop"),
        ("db.people.aggregate([{$match: {a: 1}, $limit: 1}])", "pipeline"),
        ("db.people.find({}, {name: 1, age: 0})", "projection"),
        ("db.orders.aggregate([{$project: {x: {$divide: ['$qty', 0]}}}])", "$divide"),
        ("db.people.aggregate([{$project: {n: {$size: '$age'}}}])", "$size"),
        ("db.people.aggregate([{$project: {v: '$$nothing'}}])", "$$nothing"),
        ("db.people.find({name: {$regex: 'a', $options: 'g'}})", "$options"),
        ("db.people.find({name: {$regex: '(?<n>a)'}})", "$regex"),  # JS syntax Python lacks
    ],
)
def test_what_cannot_run_raises_unsupported_query(text, name):
    with pytest.raises(UnsupportedQuery) as caught:
        run(text)
    assert caught.value.name == name


def test_a_query_without_a_collection_cannot_run():
    with pytest.raises(UnsupportedQuery):
        execute(MongoQuery(None, "find", filter={}), DB)


@pytest.mark.parametrize(
    ("gold", "predicted", "ordered", "expected"),
    [
        (3, [{"n": 3}], False, True),  # count() and a $count stage
        ([{"a": 1}, {"a": 2}], [{"a": 2}, {"a": 1}], False, True),
        ([{"a": 1}, {"a": 2}], [{"a": 2}, {"a": 1}], True, False),
        ([{"a": 1}, {"a": 1}], [{"a": 1}], False, False),  # multisets: repeats count
        ([{"a": 1}], [{"a": 1.0}], True, True),
        ([{"a": True}], [{"a": 1}], False, False),
        ([{"a": 0.1 + 0.2}], [{"a": 0.3}], False, True),
        ([{"count": 3}], [{"total": 3}], False, True),  # field names do not count
        ([{"_id": 1, "name": "Ann"}], [{"name": "Ann"}], False, True),
        ([{"_id": "Paris"}], [{"city": "Paris"}], False, True),
        ([{"_id": "Paris", "n": 2}], [{"city": "Paris", "n": 2}], False, True),
        ([{"_id": "Paris", "n": 2}], [{"_id": "Paris", "city": "Paris", "n": 2}], False, True),
        ([{"name": "Ann"}], [{"name": "Ann", "age": 30}], False, False),
        (["a", "b"], [{"_id": "b"}, {"_id": "a"}], False, True),  # distinct and a $group
        ([{"a": {"b": 1}}], [{"b": 1}], False, True),  # nested documents by their values
        ([{"a": [1, 2]}], [{"a": [2, 1]}], False, False),  # arrays keep their order
        ([], [], True, True),
        ([], [{"n": 0}], False, False),
    ],
)
def test_results_match(gold, predicted, ordered, expected):
    assert results_match(gold, predicted, ordered) is expected


def test_every_gold_query_of_the_bundled_sample_runs():
    """Each sample gold runs on a tiny synthetic database built from its schema."""
    items = json.loads(sample_path("docspider").read_text(encoding="utf-8"))
    schemas = json.loads(sample_path("docspider_collections").read_text(encoding="utf-8"))
    schemas = {schema["db_id"]: schema for schema in schemas}
    ran, unsupported = 0, {}
    for item in items:
        try:
            query = parse_query(item["query"])
        except QueryParseError:
            continue  # the one listed in test_mongo_query.UNPARSABLE_GOLD
        try:
            execute(query, _synthetic(schemas[item["db_id"]]))
            ran += 1
        except UnsupportedQuery as err:
            unsupported[item["question_id"]] = str(err)
    assert unsupported == {}
    assert ran == 299


def _synthetic(schema: dict) -> dict[str, list[dict]]:
    """Three documents per collection, every field 1, 2 or 3: joins on equal ids find rows."""
    return {
        name: [{f: k for c, f in schema["column_names"] if c == index} for k in (1, 2, 3)]
        for index, name in enumerate(schema["collection_names"])
    }
