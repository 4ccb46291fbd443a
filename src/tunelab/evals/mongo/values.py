"""Values as MongoDB sees them: one total order over types, equality, and field paths.

Shared by the embedded executor's matcher, expression evaluator and stages. Documents are
plain dicts (as read from JSON); the parser's `Regex`, `ObjectId` and `datetime` values
take their BSON places in the order.
"""

from __future__ import annotations

from datetime import datetime

from tunelab.evals.mongo.syntax import ObjectId, Regex


class UnsupportedQuery(ValueError):
    """The embedded executor cannot run this query (an operator or stage it does not know,
    or arguments MongoDB itself would reject): "execution not possible", not a wrong answer.
    """

    def __init__(self, name: str, reason: str | None = None) -> None:
        super().__init__(f"{name}: {reason}" if reason else f"{name} is not supported")
        self.name = name
        self.reason = reason


class _Missing:
    """A field that is not there, which MongoDB distinguishes from null in places."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()

# BSON comparison order: null < numbers < strings < objects < arrays < ObjectId < booleans
# < dates < regular expressions.
_NULL, _NUMBER, _STRING, _OBJECT, _ARRAY, _OBJECT_ID, _BOOL, _DATE, _REGEX = range(1, 10)


def type_rank(value) -> int:
    if value is None or value is MISSING:
        return _NULL
    if isinstance(value, bool):  # before int: True is an int to Python
        return _BOOL
    if isinstance(value, (int, float)):
        return _NUMBER
    for kind, rank in (
        (str, _STRING),
        (dict, _OBJECT),
        (list, _ARRAY),
        (ObjectId, _OBJECT_ID),
        (datetime, _DATE),
        (Regex, _REGEX),
    ):
        if isinstance(value, kind):
            return rank
    raise UnsupportedQuery(type(value).__name__, "not a value a document can hold")


def sort_key(value) -> tuple:
    """A key ordering any two values as MongoDB does; equal keys mean equal values (1 == 1.0,
    True != 1). Missing sorts as null. Objects compare with their keys sorted."""
    rank = type_rank(value)
    if rank == _NULL:
        return (rank,)
    if rank == _NUMBER and value != value:  # NaN sorts below every other number
        return (rank, float("-inf"), 0)
    if rank in (_NUMBER, _STRING, _BOOL):
        return (rank, value, 1)
    if rank == _OBJECT:
        return (rank, tuple((key, sort_key(item)) for key, item in sorted(value.items())))
    if rank == _ARRAY:
        return (rank, tuple(sort_key(item) for item in value))
    if rank == _OBJECT_ID:
        return (rank, value.hex)
    if rank == _DATE:
        return (rank, value.timestamp())
    return (rank, value.pattern, value.flags)


def equal(a, b) -> bool:
    return sort_key(a) == sort_key(b)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def truthy(value) -> bool:
    """Aggregation truth: false, null, missing and zero are false; everything else true."""
    if value is None or value is MISSING or value is False:
        return False
    return not (is_number(value) and value == 0)


def unique(values: list) -> list:
    """`values` without repeats (by MongoDB equality), in first-seen order."""
    seen, result = set(), []
    for value in values:
        key = sort_key(value)
        if key not in seen:
            seen.add(key)
            result.append(value)
    return result


def query_values(document, path: str) -> list:
    """What a query path reaches: through arrays of sub-documents, one value per branch,
    MISSING where a branch lacks the field. Leaf arrays are returned whole."""
    return _walk(document, path.split("."))


def _walk(value, parts: list[str]) -> list:
    if not parts:
        return [value]
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        return _walk(value[head], rest) if head in value else [MISSING]
    if not isinstance(value, list):
        return [MISSING]
    found = []
    if head.isdigit() and int(head) < len(value):
        found += _walk(value[int(head)], rest)
    for item in value:
        if isinstance(item, dict):
            found += _walk(item, parts)
    return found or [MISSING]


def expanded(values: list) -> list:
    """Each value, and the elements of each array value: what equality and ranges test."""
    result = []
    for value in values:
        result.append(value)
        if isinstance(value, list):
            result.extend(value)
    return result


def field_path(value, path: str):
    """An expression's `"$a.b"`: through arrays it gives the array of what each element has."""
    for index, part in enumerate(path.split(".")):
        if isinstance(value, list):
            rest = ".".join(path.split(".")[index:])
            items = (field_path(item, rest) for item in value if isinstance(item, (dict, list)))
            return [item for item in items if item is not MISSING]
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def with_path(document: dict, path: str, value) -> dict:
    """A copy of `document` with `value` at `path`, sub-documents created as needed."""
    head, _, rest = path.partition(".")
    result = dict(document)
    if not rest:
        result[head] = value
    else:
        inner = document.get(head)
        result[head] = with_path(inner if isinstance(inner, dict) else {}, rest, value)
    return result


def without_path(document: dict, path: str) -> dict:
    head, _, rest = path.partition(".")
    if head not in document:
        return document
    result = dict(document)
    if not rest:
        del result[head]
    elif isinstance(document[head], dict):
        result[head] = without_path(document[head], rest)
    elif isinstance(document[head], list):
        result[head] = [without_path(x, rest) if isinstance(x, dict) else x for x in result[head]]
    return result
