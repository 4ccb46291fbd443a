"""Query filters: whether a document matches `{field: condition, $or: [...], ...}`.

MongoDB's array semantics: a path reaches through arrays of sub-documents; equality and
range operators match when any reached value, or any element of a reached array, does;
`$size`, `$elemMatch` and `$all` look at the arrays themselves. Comparisons only match
values of the same type (numbers with numbers, strings with strings...). Missing fields
equal null. Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $regex (+ $options)
$and $or $nor $not $size $all $elemMatch $type $mod $expr; others raise `UnsupportedQuery`.
"""

from __future__ import annotations

import functools
import math
import re

from tunelab.evals.mongo.expressions import evaluate
from tunelab.evals.mongo.syntax import Regex
from tunelab.evals.mongo.values import (
    MISSING,
    UnsupportedQuery,
    equal,
    expanded,
    is_number,
    query_values,
    sort_key,
    truthy,
    type_rank,
)

_RANGES = {
    "$gt": lambda c: c > 0,
    "$gte": lambda c: c >= 0,
    "$lt": lambda c: c < 0,
    "$lte": lambda c: c <= 0,
}
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
_TYPE_TESTS = {
    "double": lambda v: isinstance(v, float),
    "int": lambda v: is_number(v) and isinstance(v, int),
    "long": lambda v: is_number(v) and isinstance(v, int),
    "number": is_number,
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "bool": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def matches(document: dict, query: dict, variables: dict | None = None) -> bool:
    if not isinstance(query, dict):
        raise UnsupportedQuery("filter", "must be a document")
    return all(_clause(document, key, condition, variables) for key, condition in query.items())


def _clause(document: dict, key: str, condition, variables: dict | None) -> bool:
    if key in ("$and", "$or", "$nor"):
        if not isinstance(condition, list) or not condition:
            raise UnsupportedQuery(key, "takes a non-empty array of filters")
        results = (matches(document, item, variables) for item in condition)
        return all(results) if key == "$and" else any(results) ^ (key == "$nor")
    if key == "$expr":
        return truthy(evaluate(condition, document, variables))
    if key.startswith("$"):
        raise UnsupportedQuery(key)
    return condition_holds(query_values(document, key), condition)


def condition_holds(values: list, condition) -> bool:
    """Whether the values a path reached satisfy `condition` (a value or `{$op: ...}`)."""
    if not (isinstance(condition, dict) and condition and next(iter(condition)).startswith("$")):
        return _equals_any(values, condition)
    options = condition.get("$options", "")
    if not isinstance(options, str):
        raise UnsupportedQuery("$options", "takes a string of regex flags")
    return all(
        _operator(values, name, argument, options)
        for name, argument in condition.items()
        if name != "$options"
    )


def _equals_any(values: list, target) -> bool:
    if isinstance(target, Regex):
        return _regex_any(values, target.pattern, target.flags)
    return any(equal(value, target) for value in expanded(values))


def _operator(values: list, name: str, argument, options: str) -> bool:
    if name == "$eq":
        return any(equal(value, argument) for value in expanded(values))
    if name == "$ne":
        return not _operator(values, "$eq", argument, options)
    if name in _RANGES:
        return _range_any(values, argument, _RANGES[name])
    if name in ("$in", "$nin"):
        if not isinstance(argument, list):
            raise UnsupportedQuery(name, "takes an array")
        found = any(_equals_any(values, target) for target in argument)
        return found if name == "$in" else not found
    if name == "$exists":
        return truthy(argument) == any(value is not MISSING for value in values)
    if name == "$regex":
        return _regex_condition(values, argument, options)
    if name == "$not":
        return _negation(values, argument)
    return _array_operator(values, name, argument)


def _array_operator(values: list, name: str, argument) -> bool:
    if name == "$size":
        if not is_number(argument) or argument != int(argument):
            raise UnsupportedQuery("$size", "takes a whole number")
        return any(isinstance(value, list) and len(value) == argument for value in values)
    if name == "$all":
        if not isinstance(argument, list):
            raise UnsupportedQuery("$all", "takes an array")
        return bool(argument) and all(_equals_any(values, target) for target in argument)
    if name == "$elemMatch":
        return any(_element_matches(value, argument) for value in values)
    if name == "$type":
        return _type_matches(values, argument)
    if name == "$mod":
        return _mod_matches(values, argument)
    raise UnsupportedQuery(name)


def _range_any(values: list, bound, test) -> bool:
    """Type bracketing: `{$gt: 5}` never matches a string; `{$gte: null}` matches null."""
    bound_key, bound_rank = sort_key(bound), type_rank(bound)
    for value in expanded(values):
        if type_rank(value) != bound_rank:
            continue
        key = sort_key(value)
        if test((key > bound_key) - (key < bound_key)):
            return True
    return False


def _regex_condition(values: list, argument, options: str) -> bool:
    if isinstance(argument, Regex):
        return _regex_any(values, argument.pattern, argument.flags + options)
    if not isinstance(argument, str):
        raise UnsupportedQuery("$regex", "takes a string or a regular expression")
    return _regex_any(values, argument, options)


def _regex_any(values: list, pattern: str, flags: str) -> bool:
    compiled = _compile(pattern, flags)
    return any(isinstance(v, str) and compiled.search(v) for v in expanded(values))


@functools.lru_cache(maxsize=256)
def _compile(pattern: str, flags: str) -> re.Pattern:
    combined = 0
    for flag in flags:
        if flag not in _REGEX_FLAGS:
            raise UnsupportedQuery("$options", f"unknown regex option {flag!r}")
        combined |= _REGEX_FLAGS[flag]
    try:
        return re.compile(pattern, combined)
    except re.error as err:
        raise UnsupportedQuery("$regex", f"pattern Python cannot read: {err}") from None


def _negation(values: list, argument) -> bool:
    if isinstance(argument, Regex):
        return not _regex_any(values, argument.pattern, argument.flags)
    if not isinstance(argument, dict) or not argument:
        raise UnsupportedQuery("$not", "takes an operator document or a regular expression")
    return not condition_holds(values, argument)


def _element_matches(value, condition) -> bool:
    if not isinstance(value, list) or not isinstance(condition, dict):
        return False
    keys = list(condition)
    by_operators = bool(keys) and keys[0].startswith("$") and keys[0] not in ("$and", "$or", "$nor")
    for element in value:
        if by_operators and condition_holds([element], condition):
            return True
        if not by_operators and isinstance(element, dict) and matches(element, condition):
            return True
    return False


def _type_matches(values: list, argument) -> bool:
    names = argument if isinstance(argument, list) else [argument]
    if not all(isinstance(name, str) and name in _TYPE_TESTS for name in names):
        raise UnsupportedQuery("$type", f"unknown type in {argument!r}")
    return any(_TYPE_TESTS[name](value) for value in expanded(values) for name in names)


def _mod_matches(values: list, argument) -> bool:
    if not (isinstance(argument, list) and len(argument) == 2 and all(map(is_number, argument))):
        raise UnsupportedQuery("$mod", "takes [divisor, remainder]")
    divisor, remainder = argument
    if divisor == 0:
        raise UnsupportedQuery("$mod", "division by zero")
    return any(
        is_number(value) and math.fmod(int(value), int(divisor)) == remainder
        for value in expanded(values)
    )
