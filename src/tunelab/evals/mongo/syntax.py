"""The data model of a parsed query, and the JavaScript-ish syntax it is read from.

`MongoQuery` (with `SubQuery` for a query used as a value) is what `parse_query` returns;
it lives here so that the comparison and execution modules need not import the parser.

`Reader(text, start).read_value()` reads one value or one `db.<collection>.<method>(...)`
chain: objects with unquoted, quoted or `$op` keys, arrays, single/double/backtick-quoted
strings, numbers, true/false/null, regex literals `/.../flags`, the shell's constructors
(`ISODate`, `new Date`, `NumberInt`, `NumberLong`, `NumberDecimal`, `ObjectId`, `RegExp`),
parentheses, trailing commas and `//` or `/* */` comments. Plain JSON is a subset of it.
Values come back as dict, list, str, int, float, bool, None, `datetime`, `Regex`,
`ObjectId`, or `DbCall` for a `db.` chain, which parser turns into a query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone


class QueryParseError(ValueError):
    """The text is not a query; `position` is the 0-based offset in the text given."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at offset {position})")
        self.message = message
        self.position = position


@dataclass(frozen=True)
class Regex:
    pattern: str
    flags: str = ""


@dataclass(frozen=True)
class ObjectId:
    hex: str


@dataclass
class DbCall:
    """`db.<collection>.<method>(args).<chained>(args)...` before any interpretation."""

    collection: str
    calls: list[tuple[str, list, int]]  # (name, arguments, offset of the name)
    position: int
    accessors: list[str | int] = field(default_factory=list)  # `.toArray()[0].name`


@dataclass
class SubQuery:
    """A query used as a value, e.g. `{$nin: db.c.distinct("x")}` or
    `{$lt: db.c.findOne({...}).age}`: run `query`, then read `path` (indexes into the list
    of results, field names into a document) from its result."""

    query: MongoQuery
    path: tuple[str | int, ...] = ()


# Stages after which documents come out in no defined order, whatever was sorted before.
_UNORDERING_STAGES = frozenset({"$group", "$facet", "$unionWith", "$bucket", "$bucketAuto"})


@dataclass
class MongoQuery:
    """One read query. `filter` is None for aggregate, `pipeline` None for the others.

    Sub-queries used as values inside a filter or pipeline are `SubQuery` values.
    """

    collection: str | None  # None for a bare JSON filter or pipeline
    method: str  # "find" | "aggregate" | "count" | "distinct"
    filter: dict | None = None
    projection: dict | None = None
    sort: list[tuple[str, int]] = field(default_factory=list)
    limit: int | None = None
    skip: int | None = None
    pipeline: list[dict] | None = None
    distinct_field: str | None = None

    @property
    def ordered(self) -> bool:
        """Whether the order of the results is defined: a find sort, or a pipeline $sort
        (or $sortByCount) that no later stage such as $group undoes."""
        if self.method != "aggregate":
            return bool(self.sort)
        ordered = False
        for stage in self.pipeline or []:
            names = set(stage) if isinstance(stage, dict) else set()
            if names & {"$sort", "$sortByCount"}:
                ordered = True
            elif names & _UNORDERING_STAGES:
                ordered = False
        return ordered


_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_$][\w$]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}
_KEYWORDS = {"true": True, "false": False, "null": None, "undefined": None}
_SPECIAL_FLOATS = {"NaN": float("nan"), "Infinity": float("inf")}
_INTEGER_WRAPPERS = ("NumberInt", "NumberLong", "Int32", "Long")


class Reader:
    """A cursor over the text; each `read_*` method consumes what it reads."""

    def __init__(self, text: str, position: int = 0) -> None:
        self.text = text
        self.pos = position

    def fail(self, message: str, position: int | None = None) -> QueryParseError:
        return QueryParseError(message, self.pos if position is None else position)

    def skip_space(self) -> None:
        """Whitespace and comments; `//` is never an (empty) regex, as in JavaScript."""
        text = self.text
        while self.pos < len(text):
            if text[self.pos].isspace():
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("unterminated comment")
                self.pos = end + 2
            else:
                return

    def peek(self) -> str:
        """The next non-space character, or "" at the end (which no `in "..."` test matches:
        callers compare with `char and char in ...`)."""
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "end of text"
            raise self.fail(f"expected {char!r}, found {found}")
        self.pos += 1

    def read_word(self) -> str:
        self.skip_space()
        match = _WORD.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a name")
        self.pos = match.end()
        return match.group()

    def read_value(self):
        char = self.peek()
        if char == "{":
            return self.read_object()
        if char == "[":
            return self.read_list("[", "]")
        if char == "(":  # a parenthesised value, as JavaScript allows
            self.pos += 1
            value = self.read_value()
            self.expect(")")
            return value
        if char and char in "\"'`":
            return self.read_string()
        if char == "/":
            return self.read_regex()
        if char and (char in "-+" or char.isdigit() or char == "."):
            return self.read_number()
        if char and _WORD.match(char):
            return self.read_named_value()
        raise self.fail("expected a value" if char else "unexpected end of text")

    def read_object(self) -> dict:
        self.expect("{")
        result: dict = {}
        while self.peek() != "}":
            key = self.read_key()
            self.expect(":")
            result[key] = self.read_value()
            if self.peek() != ",":
                break
            self.pos += 1
        self.expect("}")
        return result

    def read_key(self) -> str:
        char = self.peek()
        if char and char in "\"'`":
            return self.read_string()
        if char.isdigit():
            return str(self.read_number())
        return self.read_word()

    def read_list(self, opener: str, closer: str) -> list:
        self.expect(opener)
        items = []
        while self.peek() != closer:
            items.append(self.read_value())
            if self.peek() != ",":
                break
            self.pos += 1
        self.expect(closer)
        return items

    def read_string(self) -> str:
        quote, start = self.text[self.pos], self.pos
        self.pos += 1
        parts = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(parts)
            if char == "\n" and quote != "`":
                break
            if char == "\\":
                parts.append(self._read_escape())
                continue
            if quote == "`" and self.text.startswith("${", self.pos):
                raise self.fail("template string with ${...} is not a literal")
            parts.append(char)
            self.pos += 1
        raise self.fail("unterminated string", start)

    def _read_escape(self) -> str:
        self.pos += 1
        char = self.text[self.pos : self.pos + 1]
        if char in ("u", "x"):
            width = 4 if char == "u" else 2
            digits = self.text[self.pos + 1 : self.pos + 1 + width]
            if not re.fullmatch(f"[0-9a-fA-F]{{{width}}}", digits):
                raise self.fail("bad escape in string")
            self.pos += 1 + width
            return chr(int(digits, 16))
        self.pos += 1
        return _ESCAPES.get(char, char)

    def read_number(self) -> int | float:
        start, sign = self.pos, 1
        if self.text[self.pos] in "-+":
            sign = -1 if self.text[self.pos] == "-" else 1
            self.pos += 1
            word = _WORD.match(self.text, self.pos)
            if word and word.group() == "Infinity":
                self.pos = word.end()
                return sign * float("inf")
        match = _NUMBER.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a number", start)
        self.pos = match.end()
        literal = match.group()
        is_float = any(c in literal for c in ".eE")
        return sign * (float(literal) if is_float else int(literal))

    def read_regex(self) -> Regex:
        start = self.pos
        self.pos += 1
        in_class = False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\n":
                break
            if char == "\\":
                self.pos += 2
                continue
            if char == "/" and not in_class:
                pattern = self.text[start + 1 : self.pos]
                flags = re.match(r"[a-z]*", self.text[self.pos + 1 :]).group()
                self.pos += 1 + len(flags)
                return Regex(pattern, flags)
            in_class = (in_class and char != "]") or (not in_class and char == "[")
            self.pos += 1
        raise self.fail("unterminated regular expression", start)

    def read_named_value(self):
        start = self.pos
        word = self.read_word()
        if word in _KEYWORDS:
            return _KEYWORDS[word]
        if word in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[word]
        if word == "db":
            return self.read_db_call(start)
        if word == "new":
            word = self.read_word()
        return self.read_constructor(word, start)

    def read_constructor(self, name: str, start: int):
        """The shell's typed literals, e.g. `ISODate("2020-01-01")` or `NumberInt(5)`."""
        if self.peek() != "(":
            raise self.fail(f"unknown name {name!r}", start)
        args = self.read_list("(", ")")
        if name in ("ISODate", "Date"):
            return _date(args, self.fail("bad date", start))
        if name in _INTEGER_WRAPPERS and len(args) == 1:
            return _number_argument(args[0], int, self.fail(f"bad {name}", start))
        if name == "NumberDecimal" and len(args) == 1:
            return _number_argument(args[0], float, self.fail(f"bad {name}", start))
        if name == "ObjectId" and len(args) == 1 and isinstance(args[0], str):
            return ObjectId(args[0].lower())
        if name == "RegExp" and 1 <= len(args) <= 2 and all(isinstance(a, str) for a in args):
            return Regex(*args)
        raise self.fail(f"unsupported call {name}(...)", start)

    def read_db_call(self, start: int) -> DbCall:
        """`db.name.method(...)...`, `db["name"]...`, `db.getCollection("name")...`."""
        names = []
        if self.peek() == "[":
            names.append(self._single_string_argument("[", "]"))
        while self.peek() == ".":
            self.pos += 1
            name_at, name = self.pos, self.read_word()
            if self.peek() != "(":
                names.append(name)
                continue
            if name in ("getCollection", "collection") and not names:  # shell, Node driver
                names.append(self._single_string_argument("(", ")"))
                continue
            if not names:
                raise self.fail("expected db.<collection>.<method>(...)", name_at)
            call = self._read_calls(name, name_at)
            call.collection, call.position = ".".join(names), start
            return call
        raise self.fail("expected db.<collection>.<method>(...)")

    def _single_string_argument(self, opener: str, closer: str) -> str:
        at = self.pos
        args = self.read_list(opener, closer)
        if len(args) != 1 or not isinstance(args[0], str):
            raise self.fail("expected one collection name", at)
        return args[0]

    def _read_calls(self, name: str, name_at: int) -> DbCall:
        """The method call, chained calls, then any `[0]` or `.field` read from the result."""
        calls = [(name, self.read_list("(", ")"), name_at)]
        accessors: list[str | int] = []
        while self.peek() in (".", "["):
            if self.text[self.pos] == "[":
                accessors.append(self._read_index())
                continue
            self.pos += 1
            name_at, name = self.pos, self.read_word()
            if self.peek() != "(":
                accessors.append(name)
            elif accessors:
                raise self.fail(f"a call to {name}() after reading a field", name_at)
            else:
                calls.append((name, self.read_list("(", ")"), name_at))
        return DbCall("", calls, 0, accessors)

    def _read_index(self) -> str | int:
        at = self.pos
        index = self.read_list("[", "]")
        if len(index) != 1 or not isinstance(index[0], (str, int)) or isinstance(index[0], bool):
            raise self.fail('expected [number] or ["field"]', at)
        return index[0]


def _date(args: list, error: QueryParseError) -> datetime:
    if len(args) != 1:
        raise error  # `new Date()` means "now": not a reproducible query.
    value = args[0]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    if not isinstance(value, str):
        raise error
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise error from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _number_argument(value, kind: type, error: QueryParseError) -> int | float:
    if isinstance(value, bool):
        raise error
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise error from None
