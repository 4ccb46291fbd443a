"""Normalise parsed queries so that equal meaning gives equal JSON: `exact_match`.

`normalize` makes what does not change a query's meaning disappear: key order, quoting
and whitespace (already gone once parsed), 1 versus 1.0, `true` versus 1 in projections and
sorts, `{a: /x/i}` versus `{a: {$regex: "x", $options: "i"}}`, `{a: {$eq: 5}}` versus
`{a: 5}`, a redundant `_id: 1` in a projection, an empty projection. In filters (find,
count, distinct and `$match`), the lists of `$and`, `$or`, `$nor`, `$in`, `$nin` and `$all`
are sets: their order and repeats do not count. Pipeline stage order and the order of sort
keys always count, and so do the names given to computed fields (they are in the results).
`exact_match` compares the normalised forms as JSON text, so `true` and 1 stay different
where they mean different things (in a filter value).
"""

from __future__ import annotations

import json
from datetime import datetime

from tunelab.evals.mongo.syntax import MongoQuery, ObjectId, Regex, SubQuery

_SET_OPERATORS = frozenset({"$in", "$nin", "$all"})
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$nor"})


def normalize(query: MongoQuery) -> dict:
    """A canonical, JSON-serialisable form of `query` (see the module docstring)."""
    return {
        "collection": query.collection,
        "method": query.method,
        "filter": None if query.filter is None else _filter(query.filter),
        "projection": _projection(query.projection),
        "sort": [[key, direction] for key, direction in query.sort],
        "limit": query.limit or None,  # limit(0) is no limit
        "skip": query.skip or None,
        "pipeline": None if query.pipeline is None else [_stage(s) for s in query.pipeline],
        "distinct_field": query.distinct_field,
    }


def exact_match(a: MongoQuery, b: MongoQuery) -> bool:
    return dump(normalize(a)) == dump(normalize(b))


def canonical(value):
    """A literal as plain JSON data: 1.0 becomes 1; regexes, dates and ids tagged objects."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    if isinstance(value, Regex):
        return {
            "$regex": value.pattern,
            **({"$options": _flags(value.flags)} if value.flags else {}),
        }
    if isinstance(value, datetime):
        return {"$date": value.isoformat()}
    if isinstance(value, ObjectId):
        return {"$oid": value.hex}
    if isinstance(value, SubQuery):
        return {"$query": normalize(value.query), "$path": list(value.path)}
    return value


def _flags(flags: str) -> str:
    return "".join(sorted(set(flags)))


def dump(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _as_set(items: list) -> list:
    return [json.loads(text) for text in sorted({dump(item) for item in items})]


def is_operator_object(value) -> bool:
    return isinstance(value, dict) and bool(value) and next(iter(value)).startswith("$")


def _filter(document):
    if not isinstance(document, dict):
        return canonical(document)
    result = {}
    for key, condition in document.items():
        if key in LOGICAL_OPERATORS and isinstance(condition, list):
            result[key] = _as_set([_filter(item) for item in condition])
        elif key.startswith("$"):  # $expr, $text...: expressions, whose lists are ordered
            result[key] = canonical(condition)
        else:
            result[key] = _condition(condition)
    return result


def _condition(condition):
    if not is_operator_object(condition):
        return canonical(condition)
    result = {}
    for operator, argument in condition.items():
        if operator in _SET_OPERATORS and isinstance(argument, list):
            result[operator] = _as_set([canonical(item) for item in argument])
        elif operator == "$not":
            result[operator] = _condition(argument)
        elif operator == "$elemMatch":
            is_operators = is_operator_object(argument) and not (set(argument) & LOGICAL_OPERATORS)
            result[operator] = _condition(argument) if is_operators else _filter(argument)
        elif operator == "$regex" and isinstance(argument, Regex):
            result[operator] = argument.pattern
            result["$options"] = _flags(argument.flags + result.get("$options", ""))
        elif operator == "$options":
            result[operator] = _flags(str(argument) + result.get("$options", ""))
        else:
            result[operator] = canonical(argument)
    if result.get("$options") == "":
        del result["$options"]
    if set(result) == {"$eq"} and not isinstance(result["$eq"], dict):
        return result["$eq"]
    return result


def _projection(projection: dict | None):
    if not projection:
        return None
    result = {}
    for key, value in projection.items():
        is_flag = isinstance(value, (bool, int, float))
        result[key] = int(bool(value)) if is_flag else canonical(value)
    if len(result) > 1 and result.get("_id") == 1:
        del result["_id"]  # included by default
    return result


def _stage(stage):
    if not isinstance(stage, dict) or len(stage) != 1:
        return canonical(stage)
    ((name, spec),) = stage.items()
    if name == "$match":
        return {name: _filter(spec)}
    if name == "$project" and isinstance(spec, dict):
        return {name: _projection(spec) or {}}
    if name == "$sort" and isinstance(spec, dict):
        return {name: [[key, canonical(direction)] for key, direction in spec.items()]}
    if name == "$facet" and isinstance(spec, dict):
        return {name: {key: _sub_pipeline(value) for key, value in spec.items()}}
    if isinstance(spec, dict) and "pipeline" in spec:  # $lookup, $unionWith
        return {name: {**canonical(spec), "pipeline": _sub_pipeline(spec["pipeline"])}}
    return {name: canonical(spec)}


def _sub_pipeline(value):
    return [_stage(stage) for stage in value] if isinstance(value, list) else canonical(value)
