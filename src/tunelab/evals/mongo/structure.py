"""Partial credit between two queries: `components` and `structural_match`.

`structural_match` scores seven components, each in [0, 1], and their mean as `score`:

- collection, method: equal or not;
- operators: every `$name` used (stages, query and expression operators, accumulators),
  F1 of the two sets;
- fields: field names the query reads (filter keys, projected and sorted fields, `"$path"`
  expressions, `$lookup` local/foreign fields, `$unwind` paths, distinct fields), F1 of the
  sets;
- values: literals (filter values, constants in expressions, joined collection names), F1
  of the multisets;
- sort: the sequence of sort keys and directions (find's `.sort` and every `$sort`), equal
  or not;
- limit: the sequence of skips and limits, equal or not.

Names the writer chooses for computed fields (`$group` accumulators, computed `$project`
and `$addFields` fields, `$lookup`'s `as`, `$count`) are not compared as themselves: each is
replaced, wherever it is read later, by its rank among the names defined so far. So
`{count: {$sum: 1}}` then `$sort: {count: -1}` matches `{n: {$sum: 1}}` then
`$sort: {n: -1}`. A query right in everything but one value scores about 6/7.
"""

from __future__ import annotations

from collections import Counter

from tunelab.evals.mongo.normalize import LOGICAL_OPERATORS, canonical, dump, is_operator_object
from tunelab.evals.mongo.syntax import MongoQuery, SubQuery

_PROJECTING_STAGES = frozenset({"$project", "$addFields", "$set"})
_SCORED = ("collection", "method", "operators", "fields", "values", "sort", "limit")


def components(query: MongoQuery) -> dict:
    """The parts `structural_match` compares, as JSON data (values as canonical JSON text)."""
    parts = _Parts()
    parts.query(query)
    return {
        "collection": query.collection,
        "method": query.method,
        "operators": sorted(parts.operators),
        "fields": sorted(parts.fields),
        "values": sorted(parts.values.elements()),
        "sort": parts.sort,
        "limit": parts.limit,
    }


def structural_match(gold: MongoQuery, predicted: MongoQuery) -> dict:
    """Per-component scores in [0, 1] and their mean as `score` (see the module docstring)."""
    a, b = components(gold), components(predicted)
    scores = {name: float(a[name] == b[name]) for name in ("collection", "method", "sort", "limit")}
    scores["operators"] = _f1(Counter(set(a["operators"])), Counter(set(b["operators"])))
    scores["fields"] = _f1(Counter(set(a["fields"])), Counter(set(b["fields"])))
    scores["values"] = _f1(Counter(a["values"]), Counter(b["values"]))
    result = {name: scores[name] for name in _SCORED}
    result["score"] = sum(scores.values()) / len(_SCORED)
    return result


def _f1(gold: Counter, predicted: Counter) -> float:
    total = sum(gold.values()) + sum(predicted.values())
    return 1.0 if total == 0 else 2 * sum((gold & predicted).values()) / total


class _Parts:
    """Walks a query, filing what it finds by the context it is found in."""

    def __init__(self) -> None:
        self.operators: set[str] = set()
        self.fields: set[str] = set()
        self.values: Counter = Counter()
        self.sort: list[list] = []
        self.limit: list[list] = []
        self.outputs: dict[str, str] = {}  # computed field name -> "<output N>"

    def field(self, path: str) -> str:
        """Record a field read; returns it with a computed field's name replaced."""
        head, dot, rest = path.partition(".")
        path = self.outputs.get(head, head) + dot + rest
        self.fields.add(path)
        return path

    def define(self, name) -> None:
        if isinstance(name, str) and name != "_id":
            self.outputs.setdefault(name, f"<output {len(self.outputs) + 1}>")

    def query(self, query: MongoQuery) -> None:
        if query.filter is not None:
            self.filter(query.filter)
        self.projection(query.projection or {})
        self.sort += [[self.field(key), direction] for key, direction in query.sort]
        self.limit += [[name, n] for name in ("skip", "limit") if (n := getattr(query, name))]
        if query.distinct_field is not None:
            self.field(query.distinct_field)
        for stage in query.pipeline or []:
            self.stage(stage)

    def sub_query(self, sub: SubQuery) -> None:
        inner = _Parts()
        inner.query(sub.query)
        self.operators |= inner.operators
        self.fields |= inner.fields | {key for key in sub.path if isinstance(key, str)}
        self.values += inner.values
        self.values[dump(sub.query.collection)] += 1

    def filter(self, document) -> None:
        if not isinstance(document, dict):
            return self.literal(document)
        for key, condition in document.items():
            if key in LOGICAL_OPERATORS and isinstance(condition, list):
                self.operators.add(key)
                for item in condition:
                    self.filter(item)
            elif key.startswith("$"):
                self.operators.add(key)
                self.expression(condition)
            else:
                self.field(key)
                self.condition(condition)

    def condition(self, condition) -> None:
        if not is_operator_object(condition):
            return self.literal(condition)
        for operator, argument in condition.items():
            self.operators.add(operator)
            if operator == "$not":
                self.condition(argument)
            elif operator == "$elemMatch" and not is_operator_object(argument):
                self.filter(argument)
            elif operator == "$elemMatch":
                self.condition(argument)
            else:
                self.literal(argument)

    def literal(self, value) -> None:
        if isinstance(value, SubQuery):
            self.sub_query(value)
        elif isinstance(value, dict):
            self.operators.update(key for key in value if key.startswith("$"))
            for item in value.values():
                self.literal(item)
        elif isinstance(value, list):
            for item in value:
                self.literal(item)
        else:
            self.values[dump(canonical(value))] += 1

    def expression(self, value) -> None:
        if isinstance(value, str) and value.startswith("$"):
            if not value.startswith("$$"):  # $$variables are named by the writer
                self.field(value[1:])
        elif isinstance(value, dict):
            for key, item in value.items():
                if key.startswith("$"):
                    self.operators.add(key)
                self.expression(item)
        elif isinstance(value, list):
            for item in value:
                self.expression(item)
        else:
            self.literal(value)

    def projection(self, projection: dict) -> None:
        for key, value in projection.items():
            if not isinstance(value, (bool, int, float)):
                self.expression(value)
                self.define(key)
            elif key != "_id" or value:
                self.field(key)

    def stage(self, stage) -> None:
        if not isinstance(stage, dict):
            return self.expression(stage)
        for name, spec in stage.items():
            self.operators.add(name)
            if name == "$match":
                self.filter(spec)
            elif name in _PROJECTING_STAGES and isinstance(spec, dict):
                self.projection(spec)
            elif name == "$sort" and isinstance(spec, dict):
                self.sort += [[self.field(key), canonical(d)] for key, d in spec.items()]
            elif name in ("$limit", "$skip"):
                self.limit.append([name[1:], canonical(spec)])
            elif name == "$count":
                self.define(spec)
            elif isinstance(spec, dict):
                self.stage_options(name, spec)
            else:
                self.expression(spec)

    def stage_options(self, name: str, spec: dict) -> None:
        """$group, $lookup, $unwind, $unionWith, $facet... given as an object."""
        for key, value in spec.items():
            if key in ("from", "coll"):
                self.literal(value)
            elif key in ("localField", "foreignField") and isinstance(value, str):
                self.field(value)
            elif key == "pipeline" or name == "$facet":
                for stage in value if isinstance(value, list) else [value]:
                    self.stage(stage)
            elif key in ("as", "includeArrayIndex"):
                self.define(value)
            else:
                self.expression(value)
            if name in ("$group", "$facet"):
                self.define(key)
