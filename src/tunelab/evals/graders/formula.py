"""`calculate_output` of a `multi` grader: arithmetic over the sub-graders' scores, parsed
here (never `eval`ed).

The language is OpenAI's: numbers, sub-grader names, `+ - * / ^` (`^` is a power, binding
tighter than the sign before it and grouping to the right), parentheses, and the functions
`min`, `max` (one or more arguments), `abs`, `sqrt`, `log` (natural), `exp`, `floor` and
`ceil`. Nothing else is accepted, so a formula can neither call into Python nor loop.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from tunelab.errors import TunelabError

FUNCTIONS = {
    "min": min,
    "max": max,
    "abs": abs,
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "floor": math.floor,
    "ceil": math.ceil,
}
_ONE_ARGUMENT = frozenset(FUNCTIONS) - {"min", "max"}
_BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+)|([A-Za-z_]\w*)|(\S))")


@dataclass(frozen=True)
class Formula:
    """A parsed `calculate_output`: `evaluate` it with each name's score."""

    text: str
    tree: tuple
    names: frozenset[str]

    def evaluate(self, values: dict[str, float]) -> float:
        """The formula's value; raises ArithmeticError or ValueError (a division by zero,
        the log of a negative number) for the caller to report."""
        return float(_evaluate(self.tree, values))


def parse_formula(text: str) -> Formula:
    """The formula in `text`; raises TunelabError `grader_formula_invalid` where it is not
    one (the message says what was found where)."""
    parser = _Parser(_tokens(text), text)
    tree = parser.expression()
    if parser.peek() is not None:
        parser.fail(f"unexpected {parser.peek()[1]!r}")
    return Formula(text, tree, frozenset(_names(tree)))


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: kind is `number`, `name` or `symbol`."""
    tokens, position = [], 0
    while text[position:].strip():
        found = _TOKEN.match(text, position)
        number, name, symbol = found.groups()
        if symbol is not None and symbol not in "+-*/^(),":
            raise _invalid(text, f"unexpected character {symbol!r}")
        kind = "number" if number else "name" if name else "symbol"
        tokens.append((kind, number or name or symbol))
        position = found.end()
    return tokens


class _Parser:
    """Recursive descent: expression = term (+|- term)*; term = unary (*|/ unary)*;
    unary = -unary | +unary | power; power = atom (^ unary)?."""

    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens, self.text, self.at = tokens, text, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, symbol: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            self.fail("the formula ends too early")
        if symbol is not None and token[1] != symbol:
            self.fail(f"expected {symbol!r}, found {token[1]!r}")
        self.at += 1
        return token

    def fail(self, message: str):
        raise _invalid(self.text, message)

    def binary(self, symbols: str, operand) -> tuple:
        tree = operand()
        while (token := self.peek()) is not None and token[1] in symbols:
            self.take()
            tree = ("binary", token[1], tree, operand())
        return tree

    def expression(self) -> tuple:
        return self.binary("+-", self.term)

    def term(self) -> tuple:
        return self.binary("*/", self.unary)

    def unary(self) -> tuple:
        token = self.peek()
        if token is not None and token[1] in "+-":
            self.take()
            operand = self.unary()
            return ("negate", operand) if token[1] == "-" else operand
        return self.power()

    def power(self) -> tuple:
        base = self.atom()
        if (token := self.peek()) is not None and token[1] == "^":
            self.take()
            return ("power", base, self.unary())
        return base

    def atom(self) -> tuple:
        kind, text = self.take()
        if kind == "number":
            return ("number", float(text))
        if kind == "symbol":
            if text != "(":
                self.fail(f"unexpected {text!r}")
            inner = self.expression()
            self.take(")")
            return inner
        if (token := self.peek()) is not None and token[1] == "(":
            return self.call(text)
        return ("name", text)

    def call(self, function: str) -> tuple:
        if function not in FUNCTIONS:
            self.fail(f"unknown function {function!r} (known: {', '.join(FUNCTIONS)})")
        self.take("(")
        arguments = [self.expression()]
        while self.peek() is not None and self.peek()[1] == ",":
            self.take()
            arguments.append(self.expression())
        self.take(")")
        if function in _ONE_ARGUMENT and len(arguments) != 1:
            self.fail(f"{function} takes one argument, not {len(arguments)}")
        return ("call", function, tuple(arguments))


def _evaluate(tree: tuple, values: dict[str, float]) -> float:
    kind = tree[0]
    if kind == "number":
        return tree[1]
    if kind == "name":
        return values[tree[1]]
    if kind == "negate":
        return -_evaluate(tree[1], values)
    if kind == "power":
        return _evaluate(tree[1], values) ** _evaluate(tree[2], values)
    if kind == "binary":
        return _BINARY[tree[1]](_evaluate(tree[2], values), _evaluate(tree[3], values))
    return FUNCTIONS[tree[1]](*(_evaluate(argument, values) for argument in tree[2]))


def _names(tree: tuple):
    if tree[0] == "name":
        yield tree[1]
    elif tree[0] == "call":
        for argument in tree[2]:
            yield from _names(argument)
    else:
        for part in tree[1:]:
            if isinstance(part, tuple):
                yield from _names(part)


def _invalid(text: str, message: str) -> TunelabError:
    return TunelabError(
        "grader_formula_invalid",
        f"calculate_output {text!r}: {message}.",
        hint="use numbers, the sub-graders' names, + - * / ^, parentheses and "
        + ", ".join(FUNCTIONS),
    )
