"""A light structural reader of MongoDB queries, for dataset analysis.

`describe_query` reads an answer such as
`db.station.find({}, {name: 1}).sort({lat: 1}).limit(1)` or a bare JSON filter/pipeline and
says what it is made of (collection, method, operators, pipeline length, nesting depth,
chained calls). It tokenizes with one regular expression and matches brackets; it does not
evaluate anything, so it is fast enough to run on every answer of a large file. Evaluation
needs a real parser; this module only answers "what shape is this query".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# One token per match. Alternatives starting with the same character are ordered: a string
# before a lone (unterminated) quote, a comment before a regex literal before punctuation.
# Strings are whole tokens, so brackets, `$` and `/` inside them are never seen.
_TOKEN = re.compile(
    r"""
      (?P<word>\w+)
    | (?P<open>[{\[(])
    | (?P<close>[}\])])
    | (?P<op>\$[A-Za-z_]\w*)
    | (?P<str>"[^"\\\n]*(?:\\.[^"\\\n]*)*"|'[^'\\\n]*(?:\\.[^'\\\n]*)*')
    | (?P<comment>//[^\n]*|/\*.*?\*/)
    | (?P<regex>/(?:[^/\\\n\[]|\\.|\[(?:[^\]\\\n]|\\.)*\])+/[a-z]*)
    | (?P<bad>["'`])
    | (?P<punct>\S)
    """,
    re.VERBOSE | re.DOTALL,
)
_PAIRS = {"}": "{", "]": "[", ")": "("}
_OPENERS = frozenset("{[(")
_QUOTED_OPERATOR = re.compile(r"""["']\$[A-Za-z_]\w*["']\Z""")
_FENCE = re.compile(r"\A```[\w-]*[ \t]*\n(.*?)\n?```\Z", re.DOTALL)


@dataclass(frozen=True)
class QueryShape:
    # Method called on the collection (find, aggregate, countDocuments...); "json" for a bare
    # JSON/object-literal filter or pipeline, which names no collection.
    method: str
    collection: str | None
    # Every `$name` used as a key or a bare value; "$field" path strings are not operators.
    operators: Counter = field(default_factory=Counter)
    # Stages of an aggregate pipeline (or elements of a bare JSON array); None otherwise.
    pipeline_length: int | None = None
    # Deepest nesting of {} and [] (parentheses of calls do not count).
    depth: int = 0
    # Calls chained after the method, e.g. ("sort", "limit").
    chained: tuple[str, ...] = ()


def describe_query(text: str) -> QueryShape | None:
    """The shape of a mongosh query or bare JSON filter/pipeline; None if it is neither."""
    text = text.strip()
    if text.startswith("```"):
        fenced = _FENCE.match(text)
        text = fenced.group(1).strip() if fenced else text
    # Cheap rejection: most non-query answers fail here, before any tokenizing.
    if not text.startswith(("db.", "{", "[")):
        return None
    scanned = _scan(text)
    if scanned is None:
        return None
    kinds, values, closer, depth, operators = scanned
    if kinds[0] == "open":
        return _describe_bare(values, closer, depth, operators)
    return _describe_call(kinds, values, closer, depth, operators)


def _scan(text: str):
    """Tokens, the matching closer of each opener, depth and operators; None if unbalanced."""
    kinds: list[str] = []
    values: list[str] = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "comment":
            continue
        if kind == "bad":
            return None
        kinds.append(kind)
        values.append(match.group())
    closer = [0] * len(kinds)
    stack: list[int] = []
    depth = max_depth = 0
    operators: list[str] = []
    for i, kind in enumerate(kinds):
        if kind == "open":
            stack.append(i)
            if values[i] != "(":
                depth += 1
                max_depth = max(max_depth, depth)
        elif kind == "close":
            if not stack or values[stack[-1]] != _PAIRS[values[i]]:
                return None
            closer[stack.pop()] = i
            if values[i] != ")":
                depth -= 1
        elif kind == "op":
            operators.append(values[i])
        elif kind == "str" and _is_quoted_key(kinds, values, i):
            operators.append(values[i][1:-1])
    if stack:
        return None
    return kinds, values, closer, max_depth, Counter(operators)


def _is_quoted_key(kinds: list[str], values: list[str], i: int) -> bool:
    # JSON spells operator keys as strings ("$match": ...); "$field" values are field paths.
    return (
        values[i][1:2] == "$"
        and i + 1 < len(kinds)
        and values[i + 1] == ":"
        and _QUOTED_OPERATOR.match(values[i]) is not None
    )


def _describe_bare(values, closer, depth, operators) -> QueryShape | None:
    """A filter `{...}` or a pipeline `[{...}, ...]`; `[LOC]` or `{x}` are not queries."""
    if not _only_semicolons(values, closer[0] + 1):
        return None
    if values[0] == "{":
        return QueryShape("json", None, operators, None, depth) if _is_document(values, 0) else None
    stages = _elements(values, closer, 0)
    if not all(_is_document(values, i) for i in stages):
        return None
    return QueryShape("json", None, operators, len(stages), depth)


def _is_document(values: list[str], i: int) -> bool:
    """`{}` or `{key: ...`: an object literal rather than any braced text."""
    return values[i] == "{" and (values[i + 1] == "}" or values[i + 2] == ":")


def _describe_call(kinds, values, closer, depth, operators) -> QueryShape | None:
    located = _collection(kinds, values, closer)
    if located is None:
        return None
    collection, i = located
    # i points at `.method(`
    if not (i + 2 < len(kinds) and values[i] == "." and kinds[i + 1] == "word"):
        return None
    method, args = values[i + 1], i + 2
    if values[args] != "(":
        return None
    chained, i = _chained_calls(kinds, values, closer, closer[args] + 1)
    if not _only_semicolons(values, i):
        return None
    length = _pipeline_length(values, closer, args) if method == "aggregate" else None
    return QueryShape(method, collection, operators, length, depth, chained)


def _collection(kinds, values, closer) -> tuple[str, int] | None:
    """The collection name and the index just after it: `db.name` or `db.getCollection("name")`."""
    n = len(kinds)
    if n < 4 or values[0] != "db":
        return None
    if values[1] != "." or kinds[2] != "word":
        return None
    if values[2] == "getCollection" and values[3] == "(":  # db.getCollection("name")
        if kinds[4] != "str" or closer[3] != 5:
            return None
        return values[4][1:-1], 6
    return values[2], 3


def _chained_calls(kinds, values, closer, i: int) -> tuple[tuple[str, ...], int]:
    chained = []
    while i + 2 < len(kinds) and values[i] == "." and kinds[i + 1] == "word":
        if values[i + 2] != "(":
            break
        chained.append(values[i + 1])
        i = closer[i + 2] + 1
    return tuple(chained), i


def _pipeline_length(values, closer, args: int) -> int:
    # aggregate([stage, ...]) is the norm; aggregate(stage, stage) is the old varargs form.
    first = args + 1
    if values[first] == "[" and closer[first] + 1 == closer[args]:
        return len(_elements(values, closer, first))
    return len(_elements(values, closer, args))


def _elements(values, closer, opener: int) -> list[int]:
    """Where each top-level element between an opener and its closer starts."""
    starts, expecting, i, end = [], True, opener + 1, closer[opener]
    while i < end:
        if values[i] == ",":
            expecting = True
        elif expecting:
            starts.append(i)
            expecting = False
        if values[i] in _OPENERS:
            i = closer[i]
        i += 1
    return starts


def _only_semicolons(values: list[str], start: int) -> bool:
    return all(value == ";" for value in values[start:])
