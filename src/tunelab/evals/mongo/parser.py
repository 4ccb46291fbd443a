"""Read a model's (or a dataset's) MongoDB query into a `MongoQuery`, and compare queries.

Accepted forms:

- mongosh: `db.coll.find(filter, projection)` with `.sort({...})`, `.limit(n)`, `.skip(n)`,
  `.projection({...})`, `.count()`, `.next()`, `.pretty()`, `.toArray()` chained; `findOne`
  (a find with limit 1); `db.coll.aggregate([...])` (or stages as separate arguments, and an
  options object, ignored); `db.coll.count(filter)`, `.countDocuments(filter)`,
  `.estimatedDocumentCount()`; `db.coll.distinct("field", filter)`; `db.getCollection("c")`,
  `db.collection("c")` (Node driver) and `db["c"]` for the collection. Sub-queries used
  as values (`{$nin: db.c.distinct("x")}`) become `SubQuery` values, also when a value is
  read from the result:
  `{$lt: db.c.findOne({...}).age}`, `db.c.aggregate([...]).toArray()[0].total`.
- JSON (or the same JavaScript-ish literals): an object whose keys are all among
  `collection` (required, a string), `filter` (or `query`), `projection`, `sort`, `limit`,
  `skip`, `pipeline`, `method` and `field`, e.g.
  `{"collection": "singer", "filter": {"age": {"$gt": 30}}, "sort": {"age": -1}}` or
  `{"collection": "singer", "pipeline": [...]}`; any other object is a bare find filter and
  any array a bare pipeline, both with `collection` None.

Models wrap queries in prose: the first ``` fenced block is read when there is one; text
before the query (a "Query:" label, an explanation line, `await`) is skipped; after it,
semicolons, the closing backtick of inline code and text starting on a later line are
ignored. Anything else raises `QueryParseError`.

`normalize` and `exact_match` (normalize) and `components` and `structural_match`
(structure) compare parsed queries; they are importable from here.
"""

from __future__ import annotations

import re

from tunelab.evals.mongo.normalize import exact_match, normalize
from tunelab.evals.mongo.structure import components, structural_match
from tunelab.evals.mongo.syntax import DbCall, MongoQuery, QueryParseError, Reader, SubQuery

__all__ = [
    "MongoQuery",
    "QueryParseError",
    "SubQuery",
    "components",
    "exact_match",
    "normalize",
    "parse_query",
    "structural_match",
]

_FENCE_OPEN = re.compile(r"```[^\n]*\n?")
_DB_CALL = re.compile(r"\bdb\s*[.\[]")
_LINE_START_BRACKET = re.compile(r"^[ \t]*[{\[]", re.MULTILINE)
_BRACKET_AFTER_COLON = re.compile(r":[ \t]*[{\[]")
_JSON_FORM_KEYS = frozenset(
    {
        "collection",
        "filter",
        "query",
        "projection",
        "sort",
        "limit",
        "skip",
        "pipeline",
        "method",
        "field",
    }
)
_COUNT_METHODS = frozenset({"count", "countDocuments", "estimatedDocumentCount"})
_COUNT_CURSOR_CALLS = frozenset({"count", "size", "itcount"})
_NO_OP_CURSOR_CALLS = frozenset({"pretty", "toArray"})
_SORT_WORDS = {"asc": 1, "ascending": 1, "desc": -1, "descending": -1}


def parse_query(text: str) -> MongoQuery:
    """The query in `text`; raises `QueryParseError` (with an offset into `text`)."""
    begin, end = _query_region(text)
    reader = Reader(text[:end], _query_start(text, begin, end))
    start = reader.pos
    try:
        value = reader.read_value()
    except (IndexError, RecursionError) as err:  # model output is arbitrary: never crash
        raise QueryParseError(f"unreadable query ({type(err).__name__})", reader.pos) from None
    _check_rest(reader, in_backticks=text[start - 1 : start] == "`")
    return _to_query(value, start)


def _query_region(text: str) -> tuple[int, int]:
    """The first ``` fenced block's content (to the end when unclosed), else all the text."""
    fence = _FENCE_OPEN.search(text)
    if fence is None:
        return 0, len(text)
    close = text.find("```", fence.end())
    return fence.end(), len(text) if close < 0 else close


def _query_start(text: str, begin: int, end: int) -> int:
    """Where the query starts: skips a label or an explanation written before it."""
    region = text[begin:end]
    stripped = region.lstrip()
    if stripped.startswith(("{", "[")) or _DB_CALL.match(stripped):
        return end - len(stripped)
    db_call = _DB_CALL.search(region)
    if db_call:
        return begin + db_call.start()
    bracket = _LINE_START_BRACKET.search(region) or _BRACKET_AFTER_COLON.search(region)
    if bracket:
        return begin + bracket.end() - 1
    raise QueryParseError("no query found: expected db.<collection>... or JSON", begin)


def _check_rest(reader: Reader, in_backticks: bool) -> None:
    while reader.peek() == ";":
        reader.pos += 1
    if reader.pos >= len(reader.text) or (in_backticks and reader.peek() == "`"):
        return  # the end, or the end of inline code: `db.c.find()`.
    before = reader.text[: reader.pos]
    if "\n" in before[len(before.rstrip()) :]:
        return  # an explanation on the following lines
    raise reader.fail("unexpected text after the query")


def _to_query(value, position: int) -> MongoQuery:
    if isinstance(value, DbCall):
        if value.accessors:
            raise QueryParseError("expected a query, found a value read from one", position)
        return _from_calls(value)
    if isinstance(value, dict):
        if isinstance(value.get("collection"), str) and set(value) <= _JSON_FORM_KEYS:
            return _from_json_form(value, position)
        return MongoQuery(None, "find", filter=_nested(value))
    if isinstance(value, list):
        return MongoQuery(None, "aggregate", pipeline=_pipeline([value], position))
    raise QueryParseError("expected a query, a JSON filter or a pipeline", position)


def _nested(value):
    """`value` with every `db.` sub-query in it read into a `SubQuery`."""
    if isinstance(value, DbCall):
        names = [name for name, _, _ in value.calls]
        # findOne() and next() give one document where find() gives a list of them.
        first = (0,) if names[0] == "findOne" or "next" in names else ()
        return SubQuery(_from_calls(value), first + tuple(value.accessors))
    if isinstance(value, dict):
        return {key: _nested(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nested(item) for item in value]
    return value


def _from_calls(call: DbCall) -> MongoQuery:
    method, args, at = call.calls[0]
    args = _nested(args)
    if method in ("find", "findOne"):
        query = MongoQuery(call.collection, "find", *_find_arguments(args, at))
        query.limit = 1 if method == "findOne" else None
    elif method == "aggregate":
        query = MongoQuery(call.collection, "aggregate", pipeline=_pipeline(args, at))
    elif method in _COUNT_METHODS:
        query = MongoQuery(call.collection, "count", filter=_filter_argument(args, 0, at))
    elif method == "distinct":
        query = _distinct(call.collection, args, at)
    else:
        raise QueryParseError(f"unsupported method {method}(): not a read query", at)
    for name, chained_args, chained_at in call.calls[1:]:
        _apply_cursor_call(query, name, _nested(chained_args), chained_at)
    return query


def _find_arguments(args: list, at: int) -> tuple[dict, dict | None]:
    if len(args) > 2:
        raise QueryParseError("find() takes a filter and a projection", at)
    projection = args[1] if len(args) == 2 else None
    if projection is not None and not isinstance(projection, dict):
        raise QueryParseError("the projection must be an object", at)
    return _filter_argument(args, 0, at), projection


def _filter_argument(args: list, index: int, at: int) -> dict:
    value = args[index] if len(args) > index else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise QueryParseError("the filter must be an object", at)
    return value


def _pipeline(args: list, at: int) -> list[dict]:
    # aggregate([stages], options) is the norm; aggregate(stage, stage, ...) the old form.
    stages = args[0] if args and isinstance(args[0], list) else args
    if args and isinstance(args[0], list) and len(args) > 2:
        raise QueryParseError("aggregate() takes a pipeline and options", at)
    if not all(isinstance(stage, dict) for stage in stages):
        raise QueryParseError("every pipeline stage must be an object", at)
    return stages


def _distinct(collection: str, args: list, at: int) -> MongoQuery:
    if not args or not isinstance(args[0], str) or len(args) > 3:
        raise QueryParseError('distinct() takes a field name, e.g. distinct("city")', at)
    return MongoQuery(
        collection, "distinct", filter=_filter_argument(args, 1, at), distinct_field=args[0]
    )


def _apply_cursor_call(query: MongoQuery, name: str, args: list, at: int) -> None:
    if name in _NO_OP_CURSOR_CALLS and not args:
        return
    if query.method != "find":
        raise QueryParseError(f"{name}() cannot follow {query.method}()", at)
    if name == "sort" and len(args) == 1:
        query.sort = sort_spec(args[0], at)
    elif name in ("limit", "skip") and len(args) == 1:
        setattr(query, name, _count_argument(name, args[0], at))
    elif name == "projection" and len(args) == 1 and isinstance(args[0], dict):
        query.projection = args[0]
    elif name in _COUNT_CURSOR_CALLS:
        query.method = "count"
    elif name == "next" and not args:
        query.limit = 1
    else:
        raise QueryParseError(f"unsupported cursor call {name}()", at)


def sort_spec(value, at: int) -> list[tuple[str, int]]:
    """`{a: 1, b: -1}` as [("a", 1), ("b", -1)]; "asc"/"desc" as the drivers accept them."""
    if not isinstance(value, dict) or not value:
        raise QueryParseError("sort() takes an object such as {field: 1}", at)
    spec = []
    for key, direction in value.items():
        direction = (
            _SORT_WORDS.get(direction, direction) if isinstance(direction, str) else direction
        )
        if isinstance(direction, bool) or direction not in (1, -1):
            raise QueryParseError(f"sort direction of {key!r} must be 1 or -1", at)
        spec.append((key, int(direction)))
    return spec


def _count_argument(name: str, value, at: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise QueryParseError(f"{name}() takes a whole number", at)
    return abs(int(value))  # the shell reads a negative limit as "one batch of n"


def _from_json_form(value: dict, at: int) -> MongoQuery:
    value = _nested(value)
    method = value.get("method", "aggregate" if "pipeline" in value else "find")
    collection = value["collection"]
    if method == "aggregate":
        return MongoQuery(collection, method, pipeline=_pipeline([value.get("pipeline", [])], at))
    query_filter = _filter_argument([value.get("filter", value.get("query"))], 0, at)
    if method == "distinct":
        return _distinct(collection, [value.get("field"), query_filter], at)
    if method not in ("find", "count"):
        raise QueryParseError(f"unknown method {method!r}", at)
    query = MongoQuery(collection, method, filter=query_filter)
    if value.get("projection") is not None:
        query.projection = _find_arguments([query_filter, value["projection"]], at)[1]
    if value.get("sort") is not None:
        query.sort = sort_spec(value["sort"], at)
    for name in ("limit", "skip"):
        if value.get(name) is not None:
            setattr(query, name, _count_argument(name, value[name], at))
    return query
