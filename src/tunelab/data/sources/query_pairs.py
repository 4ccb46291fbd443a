"""Question → query pairs (JSON array, JSONL, CSV or TSV) as single-turn chat examples.

The user message is the question, optionally preceded by context (e.g. the database schema)
and a blank line; the answer is the query: a string as is, an object or array as compact
JSON. Field names come from flags or are detected from common names (`QUESTION_FIELDS`,
`ANSWER_FIELDS`, matched case-insensitively, first match wins).

Context comes from `context_field` (e.g. `db_id`). With a context file, the field's value is
looked up in it: either DocSpider's `collections.json` (a list of `{db_id,
collection_names, column_names: [[collection_index, field], ...]}`, rendered as
`Collections: head(age, name); department(...)`) or a JSON object mapping value → text.
Without a context file the field's own value is added as `db_id: farm`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from tunelab.data.example import ChatExample, chat
from tunelab.data.sources.options import SourceOptions
from tunelab.data.sources.records import Reading, bad_record, first_record, iter_records
from tunelab.errors import TunelabError, usage_error

QUESTION_FIELDS = ("question", "nl", "nl_question", "utterance", "input", "prompt", "text")
ANSWER_FIELDS = ("query", "mql", "sql", "answer", "output", "completion", "target")

DEFAULT_SYSTEM = "Translate the user's question into a MongoDB query."
DEFAULT_SQL_SYSTEM = "Translate the user's question into a SQL query."


def detect_query_fields(keys: Iterable[str]) -> tuple[str, str] | None:
    """(question field, answer field) found among `keys`, or None."""
    by_lower = {key.lower(): key for key in keys}
    question = next((by_lower[n] for n in QUESTION_FIELDS if n in by_lower), None)
    answer = next((by_lower[n] for n in ANSWER_FIELDS if n in by_lower), None)
    return (question, answer) if question and answer else None


def read_query_pairs(path: Path, options: SourceOptions | None = None) -> Reading:
    """Reads the question, answer and context fields `options` name (or detects them).
    `options.system=None` picks the default (SQL wording when the answer field says sql);
    `system=""` writes no system message."""
    options = options or SourceOptions()
    fields, detected = _resolve_fields(path, options.question_field, options.answer_field)
    if options.context_field:
        fields["context"] = options.context_field
    context_file = options.context_file
    context = load_context(context_file) if context_file else None
    system = options.system
    if system is None:
        system = DEFAULT_SQL_SYSTEM if "sql" in fields["answer"].lower() else DEFAULT_SYSTEM
    examples = _examples(path, fields, context, system or None, context_file)
    return Reading(examples, fields=fields, detected=detected, system=system or None)


def _resolve_fields(
    path: Path, question_field: str | None, answer_field: str | None
) -> tuple[dict[str, str], list[str]]:
    if question_field and answer_field:
        return {"question": question_field, "answer": answer_field}, []
    record = first_record(path)
    found = detect_query_fields(record or {})
    question = question_field or (found[0] if found else None)
    answer = answer_field or (found[1] if found else None)
    if not question or not answer or question == answer:
        shown = ", ".join(sorted(record or {})) or "none"
        raise usage_error(
            "fields_not_detected",
            f"cannot tell which fields hold the question and the answer (fields: {shown}).",
            hint="pass --question-field and --answer-field",
            path=path,
        )
    given = {"question": question_field, "answer": answer_field}
    detected = [meaning for meaning, name in given.items() if not name]
    return {"question": question, "answer": answer}, detected


def _examples(
    path: Path,
    fields: dict[str, str],
    context: dict[str, str] | None,
    system: str | None,
    context_file: Path | None,
) -> Iterator[ChatExample]:
    for line, record in iter_records(path):
        question = _field(record, fields["question"], path, line)
        if not isinstance(question, str) or not question.strip():
            raise bad_record(path, line, f"`{fields['question']}` must be non-empty text.")
        answer = _answer_text(_field(record, fields["answer"], path, line), fields, path, line)
        user = question
        if "context" in fields:
            text = _context_text(record, fields["context"], context, context_file, path, line)
            user = f"{text}\n\n{question}"
        yield chat(user, answer, system, source_line=line)


def _field(record: dict, name: str, path: Path, line: int) -> object:
    if name not in record:
        shown = ", ".join(sorted(record))
        raise bad_record(path, line, f"record has no field `{name}` (it has: {shown}).")
    return record[name]


def _answer_text(value: object, fields: dict[str, str], path: Path, line: int) -> str:
    if isinstance(value, str):
        if not value.strip():
            raise bad_record(path, line, f"`{fields['answer']}` is empty.")
        return value
    if value is None:
        raise bad_record(path, line, f"`{fields['answer']}` is null.")
    # A query object (e.g. a MongoDB filter or pipeline) is written as compact JSON.
    return orjson.dumps(value).decode()


def _context_text(
    record: dict,
    field_name: str,
    context: dict[str, str] | None,
    context_file: Path | None,
    path: Path,
    line: int,
) -> str:
    value = _field(record, field_name, path, line)
    key = value if isinstance(value, str) else orjson.dumps(value).decode()
    if context is None:
        return f"{field_name}: {key}"
    if key not in context:
        raise bad_record(
            path,
            line,
            f"`{field_name}` is {key!r}, which {context_file} has no entry for.",
            hint="add it to the context file, or drop --context-file",
        )
    return context[key]


def load_context(path: Path) -> dict[str, str]:
    """Context file → {value of the context field: text to put in the prompt}."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError as err:
        raise TunelabError("source_not_found", f"{path} does not exist.", path=path) from err
    except orjson.JSONDecodeError as err:
        raise TunelabError("invalid_context_file", f"invalid JSON: {err}", path=path) from err
    if isinstance(data, dict):
        return {
            str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in data.items()
        }
    if isinstance(data, list):
        try:
            return {str(entry["db_id"]): render_collections(entry) for entry in data}
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise _bad_context_file(path) from err
    raise _bad_context_file(path)


def _bad_context_file(path: Path) -> TunelabError:
    return TunelabError(
        "invalid_context_file",
        "a context file must be a JSON object (value → text) or a list of "
        "{db_id, collection_names, column_names} entries like DocSpider's collections.json.",
        path=path,
    )


def render_collections(entry: dict) -> str:
    """`Collections: head(age, name); department(id)` from one collections.json entry."""
    names = list(entry["collection_names"])
    fields: list[list[str]] = [[] for _ in names]
    for index, name in entry["column_names"]:
        if index >= 0:  # Spider's schemas list a `*` column under index -1
            fields[index].append(str(name))
    parts = [f"{name}({', '.join(cols)})" for name, cols in zip(names, fields, strict=True)]
    return "Collections: " + "; ".join(parts)
