"""The JSON Schema check of tool arguments: each keyword it knows, and places named."""

from __future__ import annotations

import pytest

from tunelab.data.json_schema import schema_problem

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"enum": ["C", "F"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "when": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def test_valid_arguments_pass():
    value = {"city": "Paris", "unit": "C", "days": 3, "tags": ["a"], "when": None}
    assert schema_problem(value, SCHEMA) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({}, "arguments lacks the required 'city'"),
        ({"city": "P"}, "arguments.city is shorter than minLength 2"),
        ({"city": "Paris", "unit": "K"}, "arguments.unit is 'K', not one of ['C', 'F']"),
        ({"city": "Paris", "days": 2.5}, "arguments.days is a number, not integer"),
        ({"city": "Paris", "days": 9}, "arguments.days is above maximum 7"),
        ({"city": "Paris", "days": True}, "arguments.days is a boolean, not integer"),
        ({"city": "Paris", "tags": ["a", 1]}, "arguments.tags[1] is a number, not string"),
        ({"city": "Paris", "tags": ["a", "b", "c"]}, "more items than maxItems 2"),
        ({"city": "Paris", "when": 3}, "arguments.when matches none of its anyOf options"),
        ({"city": "Paris", "extra": 1}, "has 'extra', which its schema does not allow"),
        ([], "arguments is an array, not object"),
    ],
)
def test_each_violation_is_named_with_its_place(value, problem):
    assert problem in (schema_problem(value, SCHEMA) or "")


def test_no_schema_accepts_anything():
    assert schema_problem({"anything": [1]}, None) is None
    assert schema_problem({"anything": [1]}, {"type": "object"}) is None
