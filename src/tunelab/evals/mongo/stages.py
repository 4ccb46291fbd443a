"""Aggregation pipeline stages over in-memory documents, and find's sort and projection.

Stages: $match $project $addFields/$set $unset $group $sort $limit $skip $count $unwind
$lookup (localField/foreignField, and let/pipeline) $sortByCount $replaceRoot/$replaceWith
$unionWith $facet. $group accumulators: $sum $avg $min $max $first $last $push $addToSet
$count. Anything else raises `UnsupportedQuery`. Input documents are never modified.
"""

from __future__ import annotations

from tunelab.evals.mongo.expressions import average, evaluate, extreme, total
from tunelab.evals.mongo.filters import matches
from tunelab.evals.mongo.values import (
    MISSING,
    UnsupportedQuery,
    expanded,
    is_number,
    query_values,
    sort_key,
    unique,
    with_path,
    without_path,
)

Collections = dict[str, list[dict]]


def run_pipeline(
    documents: list[dict], pipeline: list, collections: Collections, variables: dict | None = None
) -> list[dict]:
    if not isinstance(pipeline, list):
        raise UnsupportedQuery("pipeline", "must be an array of stages")
    for stage in pipeline:
        if not isinstance(stage, dict) or len(stage) != 1:
            raise UnsupportedQuery("pipeline", "each stage is a document with one $stage key")
        ((name, spec),) = stage.items()
        run = _STAGES.get(name)
        if run is None:
            raise UnsupportedQuery(name)
        documents = run(documents, spec, collections, variables)
    return documents


def sort_documents(documents: list[dict], spec: list[tuple[str, int]]) -> list[dict]:
    """Stable multi-key sort; an array sorts by its smallest element ascending, its largest
    descending; missing sorts as null, an empty array below null."""
    for field, direction in reversed(spec):
        if direction not in (1, -1):
            raise UnsupportedQuery("$sort", "directions are 1 or -1")
        documents = sorted(
            documents,
            key=lambda d, f=field, r=direction: _sort_value(d, f, r),
            reverse=direction < 0,
        )
    return documents


def _sort_value(document: dict, field: str, direction: int) -> tuple:
    candidates = []
    for value in query_values(document, field):
        if isinstance(value, list):
            candidates += [sort_key(item) for item in value] or [(0,)]
        else:
            candidates.append(sort_key(value))
    return min(candidates) if direction > 0 else max(candidates)


def project(document: dict, spec: dict, variables: dict | None = None) -> dict:
    """Inclusion, exclusion (not both, `_id` aside) or computed fields, as $project does."""
    if not isinstance(spec, dict) or not spec:
        raise UnsupportedQuery("projection", "must be a non-empty document")
    flags = {k: v for k, v in spec.items() if isinstance(v, (bool, int, float))}
    excluded = [key for key, value in flags.items() if not value]
    included = [key for key in spec if key not in excluded]  # or computed
    # `_id: 1` or `_id: 0` goes with either kind of projection.
    if [k for k in included if k != "_id" or k not in flags] and [
        k for k in excluded if k != "_id"
    ]:
        raise UnsupportedQuery("projection", "mixes inclusion and exclusion")
    if not included or [key for key in excluded if key != "_id"]:
        for key in excluded:
            document = without_path(document, key)
        return document
    keep_id = "_id" not in spec and "_id" in document
    result = {"_id": document["_id"]} if keep_id else {}
    for key, value in spec.items():
        if key in excluded:
            continue
        if key in flags:
            result = _merge(result, _pick(document, key.split(".")))
            continue
        if key.endswith(".$"):
            raise UnsupportedQuery("projection", "the positional $ operator")
        computed = evaluate(value, document, variables)
        if computed is not MISSING:
            result = with_path(result, key, computed)
    return result


def _pick(value, parts: list[str]):
    """The part of `value` on the path, keeping the sub-documents around it."""
    if isinstance(value, list):
        picked = (_pick(item, parts) for item in value if isinstance(item, (dict, list)))
        return [item for item in picked if item is not MISSING]
    if not isinstance(value, dict) or parts[0] not in value:
        return MISSING
    inner = value[parts[0]]
    if len(parts) == 1:
        return {parts[0]: inner}
    picked = _pick(inner, parts[1:])
    return MISSING if picked is MISSING else {parts[0]: picked}


def _merge(target: dict, source) -> dict:
    if source is MISSING:
        return target
    result = dict(target)
    for key, value in source.items():
        both_dicts = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = _merge(result[key], value) if both_dicts else value
    return result


def _match(documents, spec, collections, variables):
    return [document for document in documents if matches(document, spec, variables)]


def _project(documents, spec, collections, variables):
    return [project(document, spec, variables) for document in documents]


def _add_fields(documents, spec, collections, variables):
    if not isinstance(spec, dict):
        raise UnsupportedQuery("$addFields", "takes a document")
    results = []
    for document in documents:
        for key, expression in spec.items():
            value = evaluate(expression, document, variables)
            document = (
                without_path(document, key) if value is MISSING else with_path(document, key, value)
            )
        results.append(document)
    return results


def _unset(documents, spec, collections, variables):
    fields = [spec] if isinstance(spec, str) else spec
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise UnsupportedQuery("$unset", "takes a field name or an array of them")
    results = []
    for document in documents:
        for field in fields:
            document = without_path(document, field)
        results.append(document)
    return results


def _sort(documents, spec, collections, variables):
    if not isinstance(spec, dict) or not spec:
        raise UnsupportedQuery("$sort", "takes a document of fields")
    if not all(is_number(d) for d in spec.values()):
        raise UnsupportedQuery("$sort", "directions are 1 or -1")
    return sort_documents(documents, [(key, int(d)) for key, d in spec.items()])


def _count_argument(name: str, value) -> int:
    if not is_number(value) or value != int(value) or value < 0:
        raise UnsupportedQuery(name, "takes a whole number")
    return int(value)


def _limit(documents, spec, collections, variables):
    if _count_argument("$limit", spec) == 0:
        raise UnsupportedQuery("$limit", "must be positive")
    return documents[: int(spec)]


def _skip(documents, spec, collections, variables):
    return documents[_count_argument("$skip", spec) :]


def _count(documents, spec, collections, variables):
    if not isinstance(spec, str) or not spec or spec.startswith("$") or "." in spec:
        raise UnsupportedQuery("$count", "takes a field name")
    return [{spec: len(documents)}] if documents else []  # no input, no document


def _group(documents, spec, collections, variables):
    if not isinstance(spec, dict) or "_id" not in spec:
        raise UnsupportedQuery("$group", "takes a document with an _id")
    groups: dict[tuple, tuple] = {}
    for document in documents:
        key = evaluate(spec["_id"], document, variables)
        key = None if key is MISSING else key
        groups.setdefault(sort_key(key), (key, []))[1].append(document)
    return [
        {
            "_id": key,
            **{
                name: _accumulate(name, accumulator, members, variables)
                for name, accumulator in spec.items()
                if name != "_id"
            },
        }
        for key, members in groups.values()
    ]


def _accumulate(name: str, accumulator, documents: list[dict], variables):
    if not isinstance(accumulator, dict) or len(accumulator) != 1:
        raise UnsupportedQuery("$group", f"{name} must be {{$accumulator: expression}}")
    ((operator, expression),) = accumulator.items()
    if operator == "$count":
        return len(documents)
    values = [evaluate(expression, document, variables) for document in documents]
    if operator in ("$first", "$last"):
        value = values[0 if operator == "$first" else -1] if values else None
        return None if value is MISSING else value
    present = [value for value in values if value is not MISSING]
    summaries = {
        "$sum": total,
        "$avg": average,
        "$push": list,
        "$addToSet": unique,
        "$min": lambda vs: extreme(vs, min),
        "$max": lambda vs: extreme(vs, max),
    }
    if operator not in summaries:
        raise UnsupportedQuery(operator, "not a supported $group accumulator")
    return summaries[operator](present)


def _unwind(documents, spec, collections, variables):
    options = {"path": spec} if isinstance(spec, str) else spec
    path = options.get("path") if isinstance(options, dict) else None
    if not isinstance(path, str) or not path.startswith("$"):
        raise UnsupportedQuery("$unwind", 'takes a "$field" path')
    path, keep = path[1:], bool(options.get("preserveNullAndEmptyArrays"))
    index_field = options.get("includeArrayIndex")
    if index_field is not None and not isinstance(index_field, str):
        raise UnsupportedQuery("$unwind", "includeArrayIndex takes a field name")
    results = []
    for document in documents:
        value = _nested(document, path)
        if isinstance(value, list) and value:
            for index, item in enumerate(value):
                unwound = with_path(document, path, item)
                results.append(with_path(unwound, index_field, index) if index_field else unwound)
        elif isinstance(value, list) or value is None or value is MISSING:
            if keep:
                kept = without_path(document, path) if isinstance(value, list) else document
                results.append(with_path(kept, index_field, None) if index_field else kept)
        else:  # a single value unwinds as itself
            results.append(with_path(document, index_field, None) if index_field else document)
    return results


def _nested(document: dict, path: str):
    value = document
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def _lookup(documents, spec, collections, variables):
    if not isinstance(spec, dict) or not isinstance(spec.get("as"), str):
        raise UnsupportedQuery("$lookup", "takes from, localField, foreignField and as")
    local_field, foreign_field = spec.get("localField"), spec.get("foreignField")
    by_fields = isinstance(local_field, str) and isinstance(foreign_field, str)
    if not isinstance(spec.get("from"), str) or not (by_fields or "pipeline" in spec):
        raise UnsupportedQuery("$lookup", "takes from, and localField/foreignField or a pipeline")
    foreign = collections.get(spec["from"], [])
    results = []
    for document in documents:
        joined = foreign
        if by_fields:
            wanted = [
                None if v is MISSING else v for v in expanded(query_values(document, local_field))
            ]
            joined = [f for f in foreign if _joins(wanted, f, foreign_field)]
        if "pipeline" in spec:
            scope = {
                name: evaluate(expression, document, variables)
                for name, expression in (spec.get("let") or {}).items()
            }
            joined = run_pipeline(
                joined, spec["pipeline"], collections, {**(variables or {}), **scope}
            )
        results.append(with_path(document, spec["as"], list(joined)))
    return results


def _joins(wanted: list, foreign: dict, field: str) -> bool:
    keys = {sort_key(None if v is MISSING else v) for v in expanded(query_values(foreign, field))}
    return any(sort_key(value) in keys for value in wanted)


def _sort_by_count(documents, spec, collections, variables):
    grouped = _group(documents, {"_id": spec, "count": {"$sum": 1}}, collections, variables)
    return sort_documents(grouped, [("count", -1)])


def _replace_root(documents, spec, collections, variables):
    if not isinstance(spec, dict) or "newRoot" not in spec:
        raise UnsupportedQuery("$replaceRoot", "takes newRoot")
    return _replace_with(documents, spec["newRoot"], collections, variables)


def _replace_with(documents, spec, collections, variables):
    results = []
    for document in documents:
        root = evaluate(spec, document, variables)
        if not isinstance(root, dict):
            raise UnsupportedQuery("$replaceRoot", "the new root must be a document")
        results.append(root)
    return results


def _union_with(documents, spec, collections, variables):
    options = {"coll": spec} if isinstance(spec, str) else spec
    if not isinstance(options, dict) or not isinstance(options.get("coll"), str):
        raise UnsupportedQuery("$unionWith", "takes a collection name")
    other = collections.get(options["coll"], [])
    return documents + run_pipeline(other, options.get("pipeline", []), collections, variables)


def _facet(documents, spec, collections, variables):
    if not isinstance(spec, dict):
        raise UnsupportedQuery("$facet", "takes a document of pipelines")
    return [
        {
            name: run_pipeline(documents, pipeline, collections, variables)
            for name, pipeline in spec.items()
        }
    ]


_STAGES = {
    "$match": _match,
    "$project": _project,
    "$addFields": _add_fields,
    "$set": _add_fields,
    "$unset": _unset,
    "$group": _group,
    "$sort": _sort,
    "$limit": _limit,
    "$skip": _skip,
    "$count": _count,
    "$unwind": _unwind,
    "$lookup": _lookup,
    "$sortByCount": _sort_by_count,
    "$replaceRoot": _replace_root,
    "$replaceWith": _replace_with,
    "$unionWith": _union_with,
    "$facet": _facet,
}
