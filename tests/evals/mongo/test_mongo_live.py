"""Queries on a (mongomock) MongoDB database give what the embedded executor gives."""

from __future__ import annotations

import copy
import socket
import sys
import time
from datetime import datetime, timezone

import bson
import mongomock
import pymongo
import pytest
from mongo_documents import ITEMS, ORDERS
from pymongo import errors

from tunelab.errors import TunelabError
from tunelab.evals.mongo.executor import UnsupportedQuery, execute, results_match
from tunelab.evals.mongo.live import LiveDatabase, LiveQueryError
from tunelab.evals.mongo.parser import parse_query

UTC = timezone.utc
PEOPLE = [
    {
        "_id": 1,
        "name": "Ann",
        "age": 30,
        "tags": ["a", "b"],
        "joined": datetime(2020, 1, 5, tzinfo=UTC),
        "address": {"city": "Paris", "zip": "75001"},
    },
    {
        "_id": 2,
        "name": "bob",
        "age": 25.0,
        "tags": ["b"],
        "address": {"city": "Lyon"},
        "joined": datetime(2021, 3, 1, tzinfo=UTC),
    },
    {"_id": 3, "name": "Cy", "age": None, "tags": [], "address": {"city": "Paris"}},
    {"_id": 4, "name": "Dee", "age": "40", "tags": "a"},
    {"_id": 5, "name": "Eve"},
]
COLLECTIONS = {"people": PEOPLE, "orders": ORDERS, "items": ITEMS, "banned": [{"name": "bob"}]}

# mongomock gets `{tags: {$size: 1}}` wrong (it matches the string "a") and has no
# $sortByCount, so neither is here.
QUERIES = [
    "db.people.find({age: {$gt: 20}})",
    "db.people.find({name: /^[a-c]/i}, {name: 1, _id: 0}).sort({name: 1})",
    "db.people.find({tags: 'a'}, {'address.city': 1}).sort({_id: -1}).skip(1).limit(2)",
    "db.people.find({$or: [{age: {$exists: false}}, {age: null}]})",
    "db.people.find({joined: {$gte: ISODate('2021-01-01')}}, {name: 1})",
    "db.people.find({'address.city': 'Paris', age: {$type: 'number'}})",
    "db.people.find({name: {$nin: db.banned.distinct('name')}}).sort({_id: 1})",
    "db.people.find({age: {$lt: db.people.findOne({name: 'Ann'}).age}})",
    "db.people.findOne({name: 'Ann'})",
    "db.people.find({}, {})",
    "db.orders.count({store: 'A'})",
    "db.orders.find({}).skip(1).limit(2).count()",
    "db.orders.countDocuments({qty: {$gte: 2}})",
    "db.people.distinct('tags')",
    "db.orders.distinct('item', {price: 1.5})",
    "db.missing.find({})",
    "db.orders.aggregate([{$match: {qty: {$gt: 1}}},"
    " {$group: {_id: '$store', total: {$sum: '$qty'}}}])",
    "db.orders.aggregate([{$group: {_id: '$item', n: {$sum: 1}, avg: {$avg: '$price'}}},"
    " {$sort: {n: -1, _id: 1}}])",
    "db.orders.aggregate([{$lookup: {from: 'items', localField: 'item', foreignField: 'sku',"
    " as: 'variants'}}, {$unwind: '$variants'}, {$project: {item: 1, color: '$variants.color'}}])",
    "db.people.aggregate([{$unwind: '$tags'}, {$group: {_id: '$tags', people: {$push: '$name'}}},"
    " {$sort: {_id: 1}}])",
    "db.orders.aggregate([{$project: {item: 1, total: {$multiply: ['$qty', '$price']}}},"
    " {$sort: {_id: 1}}, {$limit: 3}])",
    "db.orders.aggregate([{$match: {store: 'B'}}, {$count: 'n'}])",
]


@pytest.fixture
def database():
    database = mongomock.MongoClient().get_database("shop")
    for name, documents in COLLECTIONS.items():
        database[name].insert_many(copy.deepcopy(documents))
    return database


@pytest.mark.parametrize("text", QUERIES)
def test_live_results_match_the_embedded_executor(database, text):
    query = parse_query(text)
    expected = execute(query, COLLECTIONS)
    got = LiveDatabase(database).execute(query)
    assert type(got) is type(expected)
    assert results_match(expected, got, ordered=query.ordered)


def test_results_differ_when_the_data_differs(database):
    # Guards the comparison above against matching anything.
    query = parse_query("db.orders.find({store: 'A'}).sort({qty: 1})")
    database.orders.update_one({"_id": 4}, {"$set": {"qty": 1}})
    assert not results_match(
        execute(query, COLLECTIONS), LiveDatabase(database).execute(query), ordered=True
    )


def test_object_ids_come_back_as_hex_and_stay_object_ids_in_sub_queries():
    database = mongomock.MongoClient().get_database("shop")
    ann, bob = bson.ObjectId(), bson.ObjectId()
    database.people.insert_many([{"_id": ann, "name": "Ann"}, {"_id": bob, "name": "Bob"}])
    database.orders.insert_many([{"_id": 1, "buyer": ann}, {"_id": 2, "buyer": bob}])
    live = LiveDatabase(database)

    found = live.execute(parse_query(f"db.people.find({{_id: ObjectId('{ann}')}})"))
    assert found == [{"_id": str(ann), "name": "Ann"}]
    orders = live.execute(
        parse_query("db.orders.find({buyer: db.people.findOne({name: 'Bob'})._id})")
    )
    assert orders == [{"_id": 2, "buyer": str(bob)}]


def test_dates_come_back_aware_and_decimals_as_floats(database):
    database.orders.insert_one(
        {"_id": 9, "price": bson.Decimal128("2.50"), "at": datetime(2024, 5, 1, 12, 0)}
    )
    got = LiveDatabase(database).execute(parse_query("db.orders.findOne({_id: 9})"))
    assert got == [{"_id": 9, "price": 2.5, "at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC)}]


@pytest.mark.parametrize(
    "text",
    [
        "db.orders.aggregate([{$match: {}}, {$out: 'copy'}])",
        "db.orders.aggregate([{$merge: {into: 'copy'}}])",
        "db.people.find({name: {$in: db.orders.aggregate([{$out: 'copy'}]).toArray()}})",
    ],
)
def test_writing_stages_are_refused_before_anything_is_sent(database, text):
    with pytest.raises(LiveQueryError) as caught:
        LiveDatabase(database).execute(parse_query(text))
    assert isinstance(caught.value, UnsupportedQuery)
    assert "copy" not in database.list_collection_names()


@pytest.mark.parametrize(
    "text",
    ["db.orders.find({qty: {$nosuch: 1}})", "db.orders.aggregate([{$project: {x: {$nosuch: 1}}}])"],
)
def test_a_query_the_server_rejects_is_a_live_query_error(database, text):
    with pytest.raises(LiveQueryError, match=r"\$nosuch"):
        LiveDatabase(database).execute(parse_query(text))


class _Failing:
    """A database whose every collection raises `error`, as a server or network might."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getitem__(self, name):
        return self

    def find(self, *args, **kwargs):
        raise self.error


def test_a_query_past_its_time_limit_is_a_live_query_error():
    live = LiveDatabase(
        _Failing(errors.ExecutionTimeout("operation exceeded time limit", 50)), query_timeout_ms=100
    )
    with pytest.raises(LiveQueryError, match="within 100 ms"):
        live.execute(parse_query("db.orders.find({})"))


def test_losing_the_server_mid_run_is_a_user_error_not_a_non_match():
    live = LiveDatabase(_Failing(errors.AutoReconnect("connection closed")))
    with pytest.raises(TunelabError) as caught:
        live.execute(parse_query("db.orders.find({})"))
    assert caught.value.code == "mongo_unreachable"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_server_fails_fast_without_showing_the_password():
    uri = f"mongodb://ann:s3cr%40tpw@127.0.0.1:{_closed_port()}/shop?authSource=admin"
    started = time.monotonic()
    with pytest.raises(TunelabError) as caught:
        LiveDatabase.connect(uri, timeout_ms=200)
    # pymongo's own server-selection timeout is 30 s: well under it means ours applied,
    # with room for a busy machine.
    assert time.monotonic() - started < 20
    assert caught.value.code == "mongo_unreachable"
    shown = str(caught.value) + repr(caught.value.to_dict())
    assert "127.0.0.1" in shown and "s3cr" not in shown
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("mongodb://127.0.0.1:1", "mongo_db_missing"),
        ("mongodb://ann:hunter2@127.0.0.1:1/bad name", "invalid_mongo_uri"),
        ("http://ann:hunter2@127.0.0.1:1/shop", "invalid_mongo_uri"),
    ],
)
def test_unusable_uris_are_user_errors(uri, code):
    with pytest.raises(TunelabError) as caught:
        LiveDatabase.connect(uri, timeout_ms=200)
    assert caught.value.code == code
    assert "hunter2" not in str(caught.value)


def test_missing_database_error_names_the_flag():
    with pytest.raises(TunelabError, match="--mongo-db"):
        LiveDatabase.connect("mongodb://127.0.0.1:1", timeout_ms=200)


@pytest.fixture
def served(monkeypatch, database):
    """`pymongo.MongoClient(uri)` gives a mongomock client on the server holding `database`."""
    store = database.client._store  # what mongomock's clients of one server share

    def client_for(uri, **options):
        return mongomock.MongoClient(uri, _store=store)

    monkeypatch.setattr(pymongo, "MongoClient", client_for)
    return database.client


def test_connect_uses_the_uri_database_unless_one_is_given(served):
    served.get_database("other").notes.insert_one({"_id": 1, "text": "hi"})
    count = parse_query("db.orders.count({})")
    with LiveDatabase.connect("mongodb://ann:pw@db.example:27017/shop") as live:
        assert live.database.name == "shop" and live.execute(count) == 4
    with LiveDatabase.connect("mongodb://db.example:27017/shop", database="other") as live:
        assert live.execute(parse_query("db.notes.distinct('text')")) == ["hi"]


def test_connecting_to_an_empty_database_is_refused(served):
    # Every query would return nothing there, so every answer would "match".
    with pytest.raises(TunelabError) as caught:
        LiveDatabase.connect("mongodb://db.example:27017/shopp")
    assert caught.value.code == "mongo_db_empty" and "--mongo-db" in caught.value.hint


def test_refused_credentials_are_a_user_error_without_the_password(served, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise errors.OperationFailure("Authentication failed.", 18)

    monkeypatch.setattr(mongomock.database.Database, "command", refuse)
    with pytest.raises(TunelabError) as caught:
        LiveDatabase.connect("mongodb://ann:hunter2@db.example:27017/shop")
    assert caught.value.code == "mongo_auth_failed"
    assert "Authentication failed" in str(caught.value) and "hunter2" not in str(caught.value)


def test_without_pymongo_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymongo", None)  # `import pymongo` now fails
    with pytest.raises(TunelabError) as caught:
        LiveDatabase.connect("mongodb://127.0.0.1:1/shop")
    assert caught.value.code == "missing_dependency"
    assert caught.value.hint == "pip install 'tunelab[mongo]'"
