"""Aggregation expressions: `"$field"`, `"$$variable"`, literals and `{$operator: args}`.

Supported operators: arithmetic ($add $subtract $multiply $divide $mod $abs $round), strings
($concat $toLower $toUpper $toString $strLenCP), comparison ($eq $ne $gt $gte $lt $lte $cmp),
logic ($and $or $not), conditionals ($cond $ifNull), arrays ($size $arrayElemAt $first
$last $in $isArray $concatArrays $filter $map $setIntersection $setUnion $setDifference
$anyElementTrue $allElementsTrue), $sum $avg $min $max over an array or a list of
arguments, $mergeObjects and $literal. Anything else raises `UnsupportedQuery`.
"""

from __future__ import annotations

import math

from tunelab.evals.mongo.values import (
    MISSING,
    UnsupportedQuery,
    equal,
    field_path,
    is_number,
    sort_key,
    truthy,
    unique,
)


def evaluate(expression, document: dict, variables: dict | None = None):
    """The value of `expression` for `document`; MISSING where a field path finds nothing."""
    if isinstance(expression, str) and expression.startswith("$$"):
        return _variable(expression[2:], document, variables or {})
    if isinstance(expression, str) and expression.startswith("$"):
        return field_path(document, expression[1:])
    if isinstance(expression, list):
        return [_or_null(evaluate(item, document, variables)) for item in expression]
    if not isinstance(expression, dict):
        return expression
    if expression and next(iter(expression)).startswith("$"):
        if len(expression) != 1:
            raise UnsupportedQuery(next(iter(expression)), "an expression has one operator")
        ((name, arguments),) = expression.items()
        return _operator(name, arguments, document, variables)
    result = {}
    for key, item in expression.items():  # an object literal; missing fields are left out
        value = evaluate(item, document, variables)
        if value is not MISSING:
            result[key] = value
    return result


def _or_null(value):
    return None if value is MISSING else value


def _variable(name: str, document: dict, variables: dict):
    head, _, rest = name.partition(".")
    if head in ("ROOT", "CURRENT"):
        value = document
    elif head == "REMOVE":
        return MISSING
    elif head in variables:
        value = variables[head]
    else:
        raise UnsupportedQuery(f"$${head}", "undefined variable")
    return field_path(value, rest) if rest else value


def _operator(name: str, arguments, document: dict, variables: dict | None):
    if name == "$literal":
        return arguments
    special = _LAZY.get(name)
    if special is not None:  # these read their arguments themselves
        return special(arguments, document, variables)
    function = _EAGER.get(name)
    if function is None:
        raise UnsupportedQuery(name)
    # Arguments keep MISSING (unlike array literals): {$eq: ["$nofield", null]} is false.
    arguments = arguments if isinstance(arguments, list) else [arguments]
    return function([evaluate(argument, document, variables) for argument in arguments])


def _arity(name: str, values: list, count: int) -> list:
    if len(values) != count:
        raise UnsupportedQuery(name, f"takes {count} argument(s)")
    return values


def _numbers(name: str, values: list):
    """The arguments if all are numbers; None when one is null or missing."""
    if any(v is None or v is MISSING for v in values):
        return None
    if not all(is_number(v) for v in values):
        raise UnsupportedQuery(name, "takes numbers")
    return values


def _add(values):
    numbers = _numbers("$add", values)
    return None if numbers is None else sum(numbers)


def _subtract(values):
    numbers = _numbers("$subtract", _arity("$subtract", values, 2))
    return None if numbers is None else numbers[0] - numbers[1]


def _multiply(values):
    numbers = _numbers("$multiply", values)
    return None if numbers is None else math.prod(numbers)


def _divide(values):
    numbers = _numbers("$divide", _arity("$divide", values, 2))
    if numbers is not None and numbers[1] == 0:
        raise UnsupportedQuery("$divide", "division by zero")
    return None if numbers is None else numbers[0] / numbers[1]


def _mod(values):
    numbers = _numbers("$mod", _arity("$mod", values, 2))
    if numbers is not None and numbers[1] == 0:
        raise UnsupportedQuery("$mod", "division by zero")
    return None if numbers is None else math.fmod(numbers[0], numbers[1])


def _abs(values):
    numbers = _numbers("$abs", _arity("$abs", values, 1))
    return None if numbers is None else abs(numbers[0])


def _round(values):
    numbers = _numbers("$round", values[:2])
    if numbers is None:
        return None
    places = int(numbers[1]) if len(numbers) > 1 else 0
    rounded = round(numbers[0], places)  # half to even, as MongoDB
    return int(rounded) if isinstance(numbers[0], int) or places <= 0 else rounded


def _concat(values):
    if any(v is None or v is MISSING for v in values):
        return None
    if not all(isinstance(v, str) for v in values):
        raise UnsupportedQuery("$concat", "takes strings")
    return "".join(values)


def _to_string(values):
    (value,) = _arity("$toString", values, 1)
    if value is None or value is MISSING:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (str, int, float)):
        return str(value)
    raise UnsupportedQuery("$toString", f"cannot convert {type(value).__name__}")


def _case(name: str, convert):
    def apply(values):
        (value,) = _arity(name, values, 1)
        if value is None or value is MISSING:
            return ""
        return convert(value if isinstance(value, str) else _to_string([value]))

    return apply


def _strlen(values):
    (value,) = _arity("$strLenCP", values, 1)
    if not isinstance(value, str):
        raise UnsupportedQuery("$strLenCP", "takes a string")
    return len(value)


def _comparison(name: str, test):
    def apply(values):
        a, b = (_compare_key(v) for v in _arity(name, values, 2))
        return test((a > b) - (a < b))

    return apply


def _compare_key(value) -> tuple:
    # Expressions tell a missing field from null: missing is lower than everything.
    return (0,) if value is MISSING else sort_key(value)


def _array(name: str, value) -> list:
    if not isinstance(value, list):
        raise UnsupportedQuery(name, "takes an array")
    return value


def _single(name: str, values: list):
    return _arity(name, values, 1)[0]


def _size(values):
    return len(_array("$size", _single("$size", values)))


def _element_at(values):
    array, index = _arity("$arrayElemAt", values, 2)
    if array is None or array is MISSING:
        return None
    array = _array("$arrayElemAt", array)
    if not is_number(index) or index != int(index):
        raise UnsupportedQuery("$arrayElemAt", "takes a whole number index")
    index = int(index)
    return array[index] if -len(array) <= index < len(array) else MISSING


def _end(name: str, position: int):
    def apply(values):
        value = _single(name, values)
        if value is None or value is MISSING:
            return None
        array = _array(name, value)
        return array[position] if array else MISSING

    return apply


def _in(values):
    item, array = _arity("$in", values, 2)
    return any(equal(item, element) for element in _array("$in", array))


def _concat_arrays(values):
    if any(v is None or v is MISSING for v in values):
        return None
    return [item for value in values for item in _array("$concatArrays", value)]


def _sets(name: str, values: list) -> list[list] | None:
    if any(v is None or v is MISSING for v in values):
        return None
    return [unique(_array(name, value)) for value in values]


def _set_intersection(values):
    sets = _sets("$setIntersection", values)
    if sets is None or not sets:
        return None if sets is None else []
    return [v for v in sets[0] if all(any(equal(v, w) for w in other) for other in sets[1:])]


def _set_union(values):
    sets = _sets("$setUnion", values)
    return None if sets is None else unique([v for s in sets for v in s])


def _set_difference(values):
    sets = _sets("$setDifference", _arity("$setDifference", values, 2))
    if sets is None:
        return None
    return [v for v in sets[0] if not any(equal(v, w) for w in sets[1])]


def _element_truth(name: str, combine):
    def apply(values):
        return combine(truthy(v) for v in _array(name, _single(name, values)))

    return apply


def _numeric_summary(name: str, summarise):
    """$sum/$avg/$min/$max in an expression: over one array argument, or the arguments."""

    def apply(values):
        if len(values) == 1 and isinstance(values[0], list):
            values = values[0]
        return summarise(values)

    return apply


def total(values: list):
    """$sum: numbers only, the rest ignored; 0 when there are none."""
    return sum(v for v in values if is_number(v))


def average(values: list):
    numbers = [v for v in values if is_number(v)]
    return sum(numbers) / len(numbers) if numbers else None


def extreme(values: list, pick):
    """$min (pick=min) or $max: null and missing ignored; None when nothing is left."""
    present = [v for v in values if v is not None and v is not MISSING]
    return pick(present, key=sort_key) if present else None


def _merge_objects(values):
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    result = {}
    for value in values:
        if value is None or value is MISSING:
            continue
        if not isinstance(value, dict):
            raise UnsupportedQuery("$mergeObjects", "takes documents")
        result.update(value)
    return result


def _cond(arguments, document, variables):
    if isinstance(arguments, dict):
        arguments = [arguments.get("if"), arguments.get("then"), arguments.get("else")]
    if not isinstance(arguments, list) or len(arguments) != 3:
        raise UnsupportedQuery("$cond", "takes if, then and else")
    test = truthy(evaluate(arguments[0], document, variables))
    return evaluate(arguments[1] if test else arguments[2], document, variables)


def _if_null(arguments, document, variables):
    if not isinstance(arguments, list) or len(arguments) < 2:
        raise UnsupportedQuery("$ifNull", "takes an expression and a replacement")
    for argument in arguments[:-1]:
        value = evaluate(argument, document, variables)
        if value is not None and value is not MISSING:
            return value
    return evaluate(arguments[-1], document, variables)


def _logic(name: str, combine):
    def apply(arguments, document, variables):
        arguments = arguments if isinstance(arguments, list) else [arguments]
        return combine(truthy(evaluate(a, document, variables)) for a in arguments)

    return apply


def _not(arguments, document, variables):
    arguments = arguments if isinstance(arguments, list) else [arguments]
    return not truthy(evaluate(_arity("$not", arguments, 1)[0], document, variables))


def _over_array(name: str, result_key: str):
    """$filter (keeps elements where `cond` holds) and $map (gives `in` for each element)."""

    def apply(arguments, document, variables):
        if not isinstance(arguments, dict) or result_key not in arguments:
            raise UnsupportedQuery(name, f"takes input, as and {result_key}")
        source = evaluate(arguments.get("input"), document, variables)
        if source is None or source is MISSING:
            return None
        alias, results = arguments.get("as", "this"), []
        for item in _array(name, source):
            scope = {**(variables or {}), alias: item}
            value = evaluate(arguments[result_key], document, scope)
            if name == "$map":
                results.append(_or_null(value))
            elif truthy(value):
                results.append(item)
        return results

    return apply


_LAZY = {
    "$cond": _cond,
    "$ifNull": _if_null,
    "$and": _logic("$and", all),
    "$or": _logic("$or", any),
    "$not": _not,
    "$filter": _over_array("$filter", "cond"),
    "$map": _over_array("$map", "in"),
}

_EAGER = {
    "$add": _add,
    "$subtract": _subtract,
    "$multiply": _multiply,
    "$divide": _divide,
    "$mod": _mod,
    "$abs": _abs,
    "$round": _round,
    "$concat": _concat,
    "$toString": _to_string,
    "$toLower": _case("$toLower", str.lower),
    "$toUpper": _case("$toUpper", str.upper),
    "$strLenCP": _strlen,
    "$eq": _comparison("$eq", lambda c: c == 0),
    "$ne": _comparison("$ne", lambda c: c != 0),
    "$gt": _comparison("$gt", lambda c: c > 0),
    "$gte": _comparison("$gte", lambda c: c >= 0),
    "$lt": _comparison("$lt", lambda c: c < 0),
    "$lte": _comparison("$lte", lambda c: c <= 0),
    "$cmp": _comparison("$cmp", lambda c: c),
    "$size": _size,
    "$arrayElemAt": _element_at,
    "$first": _end("$first", 0),
    "$last": _end("$last", -1),
    "$in": _in,
    "$isArray": lambda values: isinstance(_single("$isArray", values), list),
    "$concatArrays": _concat_arrays,
    "$setIntersection": _set_intersection,
    "$setUnion": _set_union,
    "$setDifference": _set_difference,
    "$anyElementTrue": _element_truth("$anyElementTrue", any),
    "$allElementsTrue": _element_truth("$allElementsTrue", all),
    "$sum": _numeric_summary("$sum", total),
    "$avg": _numeric_summary("$avg", average),
    "$min": _numeric_summary("$min", lambda values: extreme(values, min)),
    "$max": _numeric_summary("$max", lambda values: extreme(values, max)),
    "$mergeObjects": _merge_objects,
}
