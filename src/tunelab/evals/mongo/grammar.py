"""The grammar of the queries `parse_query` reads, for constrained decoding (`--constrain`).

`query_grammar(schema)` is a Lark grammar in llguidance's dialect for mongosh queries as
the DocSpider answers write them: `db.<collection>.find(filter, projection)` with
`.sort({...})`, `.limit(n)`, `.skip(n)`, `.count()` chained, `findOne`, `count`,
`countDocuments`, `distinct("field", filter)` and `aggregate([stages])`, whose values are
the shell's literals (objects with bare, double- or single-quoted keys, arrays, strings,
numbers, true/false/null, `/regex/flags`, trailing commas, and `db.` sub-queries such as
`{$in: db.c.distinct("x")}` or `{$lt: db.c.findOne({...}).age}`). Every text it accepts
is one `parse_query` reads; the JSON form `{"collection": ...}` is left out: one way of
writing a query is enough to answer in.

With a schema (the item's `Collections:` context), collection names are the schema's,
everywhere they appear: `db.<collection>`, `$lookup`'s `from` and `$unionWith`'s `coll`; and
the field names of a find, findOne, count and distinct (filter, projection, sort, the
distinct field) are that collection's own (or a quoted dotted path below one of them). A
pipeline's field names stay free: its stages name new fields (`as`, `$group`'s outputs).

`chat_grammar(constrain, schema)` is the grammar of `tunelab chat --constrain`, whose schema
is given once for the session (`--schema "Collections: ..."`).

Spaces are allowed where the shell allows them, one at a time, and a find chains at most
four cursor calls: a grammar that admits any run of whitespace, or of `.sort(...)`, lets a
small model loop on it until its token limit.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from tunelab.errors import usage_error
from tunelab.evals.mongo.schema import COLLECTIONS_PREFIX, SchemaContext

STAGES = (
    "$match", "$project", "$group", "$sort", "$limit", "$skip", "$unwind", "$count",
    "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith", "$sortByCount",
    "$facet", "$bucket", "$bucketAuto", "$sample", "$lookup", "$unionWith",
)  # fmt: skip
LOGICAL = ("$and", "$or", "$nor")
CONSTRAIN_MODES = ("off", "query", "schema")  # `--constrain`: no grammar, any names, a schema's
_BARE_KEY = re.compile(r"[A-Za-z_$][\w$]*")  # what the parser reads as an unquoted key

# The shell's literals, as the parser (`syntax.Reader`) reads them. A regex literal never
# starts with `*` or `/` (a comment to the parser) and holds no character class, whose `/`
# the parser would read differently; strings and names are bounded so that a looping
# model reaches the end of a value.
TERMINALS = r"""
NAME: /[A-Za-z_][A-Za-z0-9_]{0,63}/
KEY: /[A-Za-z_$][A-Za-z0-9_$]{0,63}/
STRING: /"([^"\\\n]|\\(["'\\\/bfnrtv0]|u[0-9a-fA-F]{4})){0,100}"/
      | /'([^'\\\n]|\\(["'\\\/bfnrtv0]|u[0-9a-fA-F]{4})){0,100}'/
NUMBER: /-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,12})?([eE][+-]?[0-9]{1,3})?/
COUNT: /(0|[1-9][0-9]{0,8})/
REGEX: /\/([^\/\\\n\[\]*]|\\[^\n])([^\/\\\n\[\]]|\\[^\n]){0,60}\/[imsx]{0,4}/
"""

VALUES = """
s: " "?
value: object | array | STRING | NUMBER | "true" | "false" | "null" | REGEX | subquery
object: "{" s [pair (s "," s pair)* [s ","]] s "}"
pair: (KEY | STRING) s ":" s value
array: "[" s [value (s "," s value)* [s ","]] s "]"
accessor: "[" COUNT "]" | "." NAME
pipeline: "[" s [stage (s "," s stage)*] s "]"
"""


def _literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _spellings(word: str) -> str:
    """`word` as a key may be written: bare (when the parser reads it so) or quoted."""
    forms = [_literal(f'"{word}"'), _literal(f"'{word}'")]
    if _BARE_KEY.fullmatch(word):
        forms.insert(0, _literal(word))
    return "(" + " | ".join(forms) + ")"


def _collection(name: str) -> str:
    """`db.name`, or `db.getCollection("name")` for a name the shell cannot write bare."""
    if _BARE_KEY.fullmatch(name) and "$" not in name:
        return _literal(f"db.{name}")
    return _literal(f"db.getCollection({json.dumps(name)})")


def _quoted(words: tuple[str, ...]) -> str:
    return " | ".join(_literal(f'"{w}"') + " | " + _literal(f"'{w}'") for w in words)


def _collection_rules(k: int, fields: tuple[str, ...]) -> str:
    """The find, count and distinct calls on collection number `k`, keys among `fields`
    (any key when there are none)."""
    if fields:
        names = " | ".join(_literal(f) for f in fields)
        keys = f"key{k}: " + " | ".join(_spellings(f) for f in fields)
        keys += f'\n    | "\\"" ({names}) ("." NAME)+ "\\""\nfield{k}: {_quoted(fields)}'
    else:
        keys = f"key{k}: KEY | STRING\nfield{k}: STRING"
    logical = " | ".join(_spellings(w) for w in LOGICAL)
    return f"""
call{k}: find{k} cursor{k}{{0,4}} [".count()"] | "aggregate(" s pipeline s ")"
    | count{k} | distinct{k}
subquery{k}: find{k} cursor{k}{{0,4}} [".count()" | ".next()"] accessor* | distinct{k}
    | "aggregate(" s pipeline s ").toArray()" accessor*
find{k}: ("find(" | "findOne(") s [filter{k} [s "," s projection{k}]] s ")"
cursor{k}: ".sort(" s sort{k} s ")" | ".limit(" s COUNT s ")" | ".skip(" s COUNT s ")"
    | ".projection(" s projection{k} s ")"
count{k}: ("countDocuments(" | "count(") s [filter{k}] s ")"
distinct{k}: "distinct(" s field{k} [s "," s filter{k}] s ")"
filter{k}: "{{" s [condition{k} (s "," s condition{k})*] s "}}"
condition{k}: key{k} s ":" s value
    | ({logical}) s ":" s "[" s filter{k} (s "," s filter{k})* s "]"
    | {_spellings("$expr")} s ":" s value
projection{k}: "{{" s [key{k} s ":" s value (s "," s key{k} s ":" s value)*] s "}}"
sort{k}: "{{" s key{k} s ":" s direction (s "," s key{k} s ":" s direction)* s "}}"
{keys}
"""


def _stage_rules(schema: SchemaContext | None) -> str:
    """A pipeline stage; with a schema, `$lookup` and `$unionWith` name its collections."""
    free = STAGES if schema is None else STAGES[:-2]
    stage = 'stage: "{" s stage_body s "}"\nstage_body: ('
    stage += " | ".join(_spellings(name) for name in free) + ') s ":" s value'
    if schema is None:
        return stage
    strings = " | ".join(_spellings(w) for w in ("localField", "foreignField", "as"))
    return f"""{stage} | lookup | union
collection_name: {_quoted(schema.names)}
lookup: {_spellings("$lookup")} s ":" s "{{" s lookup_pair (s "," s lookup_pair)* s "}}"
lookup_pair: {_spellings("from")} s ":" s collection_name
    | ({strings}) s ":" s STRING
    | {_spellings("let")} s ":" s object
    | {_spellings("pipeline")} s ":" s pipeline
union: {_spellings("$unionWith")} s ":" s (collection_name | union_spec)
union_spec: "{{" s union_pair (s "," s union_pair)* s "}}"
union_pair: {_spellings("coll")} s ":" s collection_name | {_spellings("pipeline")} s ":" s pipeline
"""


@lru_cache(maxsize=512)
def query_grammar(schema: SchemaContext | None = None) -> str:
    """The Lark grammar (llguidance's dialect) of a query: any collection and field names
    without a schema, the schema's (see the module docstring) with one."""
    if schema is None or not schema.collections:
        schema = None
        starts = ['"db." NAME "." call0']
        subqueries = ['"db." NAME "." subquery0']
        rules = [_collection_rules(0, ())]
    else:
        names = schema.names
        starts = [f'{_collection(n)} "." call{k}' for k, n in enumerate(names)]
        subqueries = [f'{_collection(n)} "." subquery{k}' for k, n in enumerate(names)]
        rules = [_collection_rules(k, schema.fields(n)) for k, n in enumerate(names)]
    head = "start: " + " | ".join(starts) + "\nsubquery: " + " | ".join(subqueries)
    direction = '\ndirection: "1" | "-1"\n'
    return head + direction + VALUES + _stage_rules(schema) + "".join(rules) + TERMINALS


def chat_grammar(constrain: str, schema: str | None = None) -> str | None:
    """The grammar a chat's answers follow under `constrain` (one of `CONSTRAIN_MODES`):
    none, the query grammar, or the one limited to `schema`, a `Collections: a(x, y); b(z)`
    line (the context a queries dataset puts in its prompts)."""
    if constrain not in CONSTRAIN_MODES:
        raise usage_error(
            "invalid_constrain",
            f"--constrain takes {', '.join(CONSTRAIN_MODES)}, not {constrain!r}",
        )
    if schema is not None and constrain != "schema":
        raise usage_error(
            "invalid_schema",
            "--schema limits the names of `--constrain schema`; it does nothing without it.",
            hint="add `--constrain schema`, or leave --schema out",
        )
    if constrain == "off":
        return None
    if constrain == "query":
        return query_grammar(None)
    return query_grammar(_chat_schema(schema))


def _chat_schema(schema: str | None) -> SchemaContext:
    example = f'--schema "{COLLECTIONS_PREFIX}head(age, name); department(id)"'
    if schema is None:
        raise usage_error(
            "missing_schema",
            "--constrain schema needs the collections and their fields.",
            hint=f"give them as the queries data does: {example}",
        )
    context = SchemaContext.parse(schema.strip())
    if context is None or not context.collections:
        raise usage_error(
            "invalid_schema",
            f"--schema {schema!r} is not a `{COLLECTIONS_PREFIX}...` line.",
            hint=f"write it as the queries data does: {example}",
        )
    return context
