"""calculate_output: parsed arithmetic, never Python."""

import math

import pytest

from tunelab.errors import TunelabError
from tunelab.evals.graders.formula import parse_formula


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.5 * a + 0.5 * b", 0.5 * 0.2 + 0.5 * 0.8),
        ("(a + b) / 2", 0.5),
        ("-2^2", -4.0),
        ("2^3^2", 512.0),
        ("max(a, b, 0.5) - min(a, b)", 0.8 - 0.2),
        ("sqrt(4) + abs(-1) + floor(1.7) + ceil(1.2) + log(exp(1))", 2 + 1 + 1 + 2 + 1),
        ("1e-1 * 10", 1.0),
    ],
)
def test_formulas_evaluate_as_arithmetic(text, expected):
    assert parse_formula(text).evaluate({"a": 0.2, "b": 0.8}) == pytest.approx(expected)


def test_a_formula_knows_the_names_it_reads():
    assert parse_formula("max(a, b) * weight_1 + 3").names == {"a", "b", "weight_1"}


@pytest.mark.parametrize(
    "text",
    ['__import__("os").system("x")', "a.b", "1 +", "min()", "sqrt(1, 2)", "a b", "", "open(a)"],
)
def test_anything_else_is_a_formula_error(text):
    with pytest.raises(TunelabError) as caught:
        parse_formula(text)
    assert caught.value.code == "grader_formula_invalid"


def test_arithmetic_errors_surface_to_the_caller():
    with pytest.raises(ZeroDivisionError):
        parse_formula("a / 0").evaluate({"a": 1.0})
    with pytest.raises(ValueError):
        parse_formula("log(a)").evaluate({"a": -1.0})
    assert math.isinf(parse_formula("exp(a)").evaluate({"a": 10.0})) is False
