"""Records from JSON, JSON Lines, CSV and TSV files, each with the line it starts on.

Every record-based reader (query pairs, tables, chat formats) goes through `iter_records`,
so they all accept the same file types and point at the same line numbers in errors.
JSON Lines, CSV and TSV stream; a JSON array is held as text (its elements are decoded one
at a time) because its line numbers need the text around them.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tunelab.data.example import ChatExample
from tunelab.data.jsonl import not_json_message
from tunelab.errors import TunelabError

# Source role names seen in the wild (ShareGPT, chat UIs) → OpenAI roles.
ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "ai": "assistant",
    "tool": "tool",
}

_WHITESPACE = re.compile(r"\s*")


@dataclass
class Reading:
    """What a reader found out about a source, and its examples (a lazy iterator)."""

    examples: Iterator[ChatExample]
    # Meaning → name in the source, e.g. {"question": "question", "answer": "query"}.
    fields: dict[str, str] = field(default_factory=dict)
    # The meanings in `fields` that were detected rather than given by flags.
    detected: list[str] = field(default_factory=list)
    # The system prompt given to every example (None: the source's own, if any).
    system: str | None = None
    # Classification categories, sorted.
    labels: list[str] = field(default_factory=list)
    # Source items left out on purpose (e.g. conversations without an answer); counted
    # while `examples` is consumed.
    skipped: int = 0


def bad_record(path: Path, line: int | None, message: str, hint: str | None = None):
    return TunelabError("invalid_record", message, hint, path=path, line=line)


def normalise_role(value: object) -> str | None:
    return ROLE_ALIASES.get(value.strip().lower()) if isinstance(value, str) else None


def iter_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line, record) for every record of a JSON array, JSONL, CSV or TSV file."""
    layout = _layout(path)
    if layout == "json":
        yield from _json_array(path)
    elif layout == "jsonl":
        yield from _json_lines(path)
    else:
        yield from _table(path, "\t" if layout == "tsv" else ",")


def first_record(path: Path) -> dict | None:
    for _, record in iter_records(path):
        return record
    return None


def table_delimiter(path: Path) -> str | None:
    """The delimiter of a CSV or TSV source; None for JSON and JSON Lines."""
    return {"csv": ",", "tsv": "\t"}.get(_layout(path))


def _layout(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".tab"):
        return "csv" if suffix == ".csv" else "tsv"
    head = _read_head(path)
    first = head.lstrip()[:1]
    if first == "[":
        return "json"
    if first == "{":
        return "jsonl"
    if suffix in (".json", ".jsonl", ".ndjson"):
        raise TunelabError(
            "invalid_json",
            "expected a JSON array of objects, or one JSON object per line.",
            path=path,
            line=1,
        )
    return "tsv" if "\t" in head.partition("\n")[0] else "csv"


def _read_head(path: Path) -> str:
    with _open_text(path) as handle:
        try:
            return handle.read(65536)
        except UnicodeDecodeError as err:
            raise _not_utf8(path) from err


def _open_text(path: Path):
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        return path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError as err:
        raise TunelabError("source_not_found", f"{path} does not exist.", path=path) from err
    except OSError as err:
        raise TunelabError("source_unreadable", f"cannot read {path}: {err}", path=path) from err


# As `tunelab validate` refuses (MAX_LINE_BYTES): format does not write what validate rejects.
MAX_LINE_CHARS = 4 << 20


def _not_utf8(path: Path, line: int | None = None) -> TunelabError:
    """The error for a file that is not UTF-8, at the line of its first bad byte.

    The text reader decodes ahead in blocks, so where it fails says little: the file is
    read again, line by line in binary, to find the line.
    """
    line = _first_undecodable_line(path) or line
    with contextlib.suppress(OSError), path.open("rb") as handle:
        if handle.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            return TunelabError(
                "not_utf8",
                "the file is UTF-16 text, not UTF-8.",
                "re-save it as UTF-8",
                path=path,
                line=1,
            )
    return TunelabError(
        "not_utf8", "the file is not UTF-8 text.", "re-save it as UTF-8", path=path, line=line
    )


def _first_undecodable_line(path: Path) -> int | None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    with contextlib.suppress(OSError), path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError:
                return number
    return None


def _json_error(path: Path, err: json.JSONDecodeError) -> TunelabError:
    return TunelabError("invalid_json", f"invalid JSON: {err.msg}", path=path, line=err.lineno)


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as handle:
        line_no = 0
        try:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if len(line) > MAX_LINE_CHARS:
                    raise TunelabError(
                        "line_too_long",
                        f"the line is {len(line):,} characters long.",
                        "no fine-tuning example is that long; check the file",
                        path=path,
                        line=line_no,
                    )
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    message = not_json_message(line) or f"invalid JSON: {err.msg}"
                    raise TunelabError("invalid_json", message, path=path, line=line_no) from err
                yield line_no, _as_object(record, path, line_no)
        except UnicodeDecodeError as err:
            raise _not_utf8(path, line_no + 1) from err


def _json_array(path: Path) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError as err:
            raise _not_utf8(path) from err
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text, _WHITESPACE.match(text).end() + 1).end()  # past "["
    if text.startswith("]", pos):
        return
    line, counted_to = 1, 0
    while True:
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise _json_error(path, err) from err
        except RecursionError:
            raise TunelabError(
                "invalid_json",
                "the JSON is nested too deeply to read.",
                "flatten the record; no example needs that many levels",
                path=path,
                line=line,
            ) from None
        yield line, _as_object(record, path, line)
        pos = _WHITESPACE.match(text, pos).end()
        if text.startswith("]", pos):
            return
        if not text.startswith(",", pos):
            end_line = 1 + text.count("\n", 0, pos)
            raise TunelabError("invalid_json", "expected ',' or ']'.", path=path, line=end_line)
        pos = _WHITESPACE.match(text, pos + 1).end()


def _as_object(record: object, path: Path, line: int) -> dict:
    if not isinstance(record, dict):
        raise bad_record(path, line, f"expected a JSON object, got {type(record).__name__}.")
    return record


def _table(path: Path, delimiter: str) -> Iterator[tuple[int, dict]]:
    # The default limit (128 KiB a field) is smaller than some real documents.
    csv.field_size_limit(2**31 - 1)
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                return
            header = [name.strip() for name in header]
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise bad_record(
                        path,
                        reader.line_num,
                        f"row has {len(row)} fields, the header has {len(header)}.",
                        "check the delimiter and the quoting of this row",
                    )
                yield reader.line_num, dict(zip(header, row, strict=True))
        except csv.Error as err:
            raise bad_record(path, reader.line_num, f"malformed row: {err}") from err
        except UnicodeDecodeError as err:
            raise _not_utf8(path, reader.line_num + 1) from err
