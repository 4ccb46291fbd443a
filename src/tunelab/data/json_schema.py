"""A JSON Schema check for tool arguments: the keywords function definitions use.

Tools declare their parameters as JSON Schema; tunelab checks a call's arguments against it
when validating training data and when grading a model's calls. The checked keywords are the
ones OpenAI's strict mode and the common tool sets use: `type` (one or a list), `enum`,
`const`, `properties`, `required`, `additionalProperties`, `items`, `anyOf`/`oneOf`/`allOf`,
`minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`. Other keywords (formats,
patterns, references) are not checked, so a schema using them accepts more than it says.
"""

from __future__ import annotations

from collections.abc import Callable

_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}
_BOUNDS = (
    ("minimum", lambda v: isinstance(v, int | float), lambda v, b: v >= b, "below"),
    ("maximum", lambda v: isinstance(v, int | float), lambda v, b: v <= b, "above"),
    ("minLength", lambda v: isinstance(v, str), lambda v, b: len(v) >= b, "shorter than"),
    ("maxLength", lambda v: isinstance(v, str), lambda v, b: len(v) <= b, "longer than"),
    ("minItems", lambda v: isinstance(v, list), lambda v, b: len(v) >= b, "fewer items than"),
    ("maxItems", lambda v: isinstance(v, list), lambda v, b: len(v) <= b, "more items than"),
)


def schema_problem(value: object, schema: object, where: str = "arguments") -> str | None:
    """Why `value` does not satisfy `schema`, naming the place (`arguments.city`); None if it
    does."""
    if not isinstance(schema, dict):
        return None  # `true`, or no schema: anything goes
    for check in (_type_problem, _value_problem, _bounds_problem, _combined_problem):
        problem = check(value, schema, where)
        if problem:
            return problem
    if isinstance(value, dict):
        return _object_problem(value, schema, where)
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problem = schema_problem(item, schema["items"], f"{where}[{index}]")
            if problem:
                return problem
    return None


def _type_problem(value: object, schema: dict, where: str) -> str | None:
    wanted = schema.get("type")
    if wanted is None:
        return None
    names = wanted if isinstance(wanted, list) else [wanted]
    if any(_TYPES.get(name, lambda _: True)(value) for name in names):
        return None
    return f"{where} is {_json_type(value)}, not {' or '.join(map(str, names))}"


def _value_problem(value: object, schema: dict, where: str) -> str | None:
    if "const" in schema and value != schema["const"]:
        return f"{where} must be {schema['const']!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} is {value!r}, not one of {schema['enum']!r}"
    return None


def _bounds_problem(value: object, schema: dict, where: str) -> str | None:
    for keyword, applies, holds, word in _BOUNDS:
        bound = schema.get(keyword)
        checked = bound is not None and applies(value) and not isinstance(value, bool)
        if checked and not holds(value, bound):
            return f"{where} is {word} {keyword} {bound}"
    return None


def _combined_problem(value: object, schema: dict, where: str) -> str | None:
    for keyword in ("anyOf", "oneOf"):
        options = schema.get(keyword)
        if not isinstance(options, list) or not options:
            continue
        if all(schema_problem(value, option, where) for option in options):
            return f"{where} matches none of its {keyword} options"
    for option in schema.get("allOf") or []:
        problem = schema_problem(value, option, where)
        if problem:
            return problem
    return None


def _object_problem(value: dict, schema: dict, where: str) -> str | None:
    properties = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in value:
            return f"{where} lacks the required {name!r}"
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problem = schema_problem(item, properties[name], f"{where}.{name}")
        elif extra is False:
            problem = f"{where} has {name!r}, which its schema does not allow"
        else:
            problem = schema_problem(item, extra, f"{where}.{name}")
        if problem:
            return problem
    return None


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")
