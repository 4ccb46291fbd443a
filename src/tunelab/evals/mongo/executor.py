"""An embedded executor for read queries over in-memory documents, and result comparison.

`execute(query, collections)` runs a parsed `MongoQuery` against `{name: [document, ...]}`
(a collection that is not there is empty, as in MongoDB): find gives the list of (projected)
documents, count an int, distinct the list of distinct values, aggregate the pipeline's
output. Sub-queries used as values run first. What the executor does not know (see
filters, expressions and stages for what it does) raises `UnsupportedQuery`, so a
caller reports "execution not possible" rather than a wrong answer. Documents are never
modified. `_id` is never invented: documents without one stay without one.

`results_match(gold, predicted, ordered)` compares two results (see its docstring).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

from tunelab.evals.mongo.filters import matches
from tunelab.evals.mongo.stages import project, run_pipeline, sort_documents
from tunelab.evals.mongo.syntax import MongoQuery, ObjectId, Regex, SubQuery
from tunelab.evals.mongo.values import MISSING, UnsupportedQuery, query_values, unique

__all__ = ["UnsupportedQuery", "execute", "results_match"]


def execute(query: MongoQuery, collections: dict[str, list[dict]]) -> list[dict] | int | list:
    if query.collection is None:
        raise UnsupportedQuery("collection", "the query names no collection")
    documents = collections.get(query.collection, [])
    if query.method == "aggregate":
        return run_pipeline(documents, _resolved(query.pipeline, collections), collections)
    query_filter = _resolved(query.filter or {}, collections)
    selected = [document for document in documents if matches(document, query_filter)]
    if query.method == "distinct":
        return _distinct(selected, query.distinct_field)
    if query.sort:
        selected = sort_documents(selected, query.sort)
    start = query.skip or 0
    selected = selected[start : start + query.limit] if query.limit else selected[start:]
    if query.method == "count":
        return len(selected)
    if query.method != "find":
        raise UnsupportedQuery(query.method)
    if query.projection:
        projection = _resolved(query.projection, collections)
        selected = [project(document, projection) for document in selected]
    return selected


def _distinct(documents: list[dict], field: str) -> list:
    """Each value once; an array counts as its elements, as in MongoDB."""
    values = []
    for document in documents:
        for value in query_values(document, field):
            values += value if isinstance(value, list) else [value]
    return unique([value for value in values if value is not MISSING])


def _resolved(value, collections: dict[str, list[dict]]):
    """`value` with each sub-query replaced by what it reads from its result."""
    if isinstance(value, SubQuery):
        return read_path(execute(value.query, collections), value.path)
    if isinstance(value, dict):
        return {key: _resolved(item, collections) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolved(item, collections) for item in value]
    return value


def read_path(result, path: tuple):
    """What a sub-query's `path` reads from its result (None where the shell gives undefined)."""
    # As the shell does: an index past the end or a field that is not there gives undefined.
    for step in path:
        if isinstance(step, int) and isinstance(result, list):
            found = -len(result) <= step < len(result)
        else:
            found = isinstance(step, str) and isinstance(result, dict) and step in result
        if not found:
            return None
        result = result[step]
    return result


def results_match(gold_result, predicted_result, ordered: bool) -> bool:
    """Whether two results hold the same answer.

    Results are compared as multisets of rows, in order only when `ordered` (pass the gold
    query's `ordered`: it sorts). A row is the set of a document's values: field names do
    not count (models name computed fields freely, and SQL execution accuracy ignores
    column names too), nested documents count by their values, numbers compare by value
    (1 == 1.0, floats to 9 decimals) but `true` is not 1. A count is one row holding the
    number, and distinct's values one row each, so `db.c.count()` and a `$count` stage
    agree. The comparison is made twice, once with `_id` and once with `_id` left out of
    every document that has other fields, and either agreeing is a match: a gold
    `find({}, {name: 1})` returns the stored `_id` that an answer excluding it rightly
    leaves out, while a `$group` result may carry its answer in `_id` alone.
    """
    for keep_id in (True, False):
        gold = _rows(gold_result, keep_id)
        predicted = _rows(predicted_result, keep_id)
        if (gold == predicted) if ordered else (Counter(gold) == Counter(predicted)):
            return True
    return False


def _rows(result, keep_id: bool) -> list[tuple]:
    if not isinstance(result, list):
        return [_row(result, keep_id)]
    return [_row(item, keep_id) for item in result]


def _row(value, keep_id: bool) -> tuple:
    if isinstance(value, dict) and not keep_id and len(value) > 1:
        value = {key: item for key, item in value.items() if key != "_id"}
    return tuple(sorted(set(_leaves(value))))


def _leaves(value) -> list[str]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [json.dumps(_plain(value), sort_keys=True)]


def _plain(value):
    """JSON data for a leaf; arrays keep their order, their documents become value rows."""
    if isinstance(value, float):
        value = round(value, 9)
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [_plain(item) if not isinstance(item, dict) else _row(item, True) for item in value]
    if isinstance(value, (Regex, ObjectId)):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
