"""Which kind of source a file is, when `--kind` is not given.

SQLite files are recognised by their header. Other files are read up to their first record
and recognised by its keys (or the CSV/TSV header), in this order:

- `messages` → chat;  `conversations` → sharegpt;  `instruction` + `output` → alpaca;
  `prompt` + `completion` → completion;
- the label column (`label`, or `--label-column`) and the text column → classification;
- a question field and an answer field (see `query_pairs.QUESTION_FIELDS`) → queries.

Flags that only make sense for one kind (`--question-field`, `--text-column`,
`--label-column`) decide the kind by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.data.sources.options import SourceOptions
from tunelab.data.sources.query_pairs import detect_query_fields
from tunelab.data.sources.records import first_record
from tunelab.errors import TunelabError, usage_error

KINDS = ("queries", "classification", "conversations", "chat", "alpaca", "sharegpt", "completion")

SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Detection:
    kind: str
    # Why, in words the user can check against the file.
    reason: str


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except FileNotFoundError as err:
        raise TunelabError("source_not_found", f"{path} does not exist.", path=path) from err
    except OSError as err:
        raise TunelabError("source_unreadable", f"cannot read {path}: {err}", path=path) from err


def detect_kind(path: Path, options: SourceOptions | None = None) -> Detection:
    options = options or SourceOptions()
    if is_sqlite(path):
        return Detection("conversations", "SQLite database")
    if options.question_field:
        return Detection("queries", "--question-field was given")
    if options.text_column or options.label_column:
        return Detection("classification", "--text-column/--label-column was given")
    record = first_record(path)
    if record is None:
        raise TunelabError("empty_source", f"{path} has no records.", path=path)
    return _kind_of_record(record, path)


def _kind_of_record(record: dict, path: Path) -> Detection:
    keys = set(record)
    shapes = [
        ("chat", {"messages"}),
        ("sharegpt", {"conversations"}),
        ("alpaca", {"instruction", "output"}),
        ("completion", {"prompt", "completion"}),
        ("classification", {"text", "label"}),
    ]
    for kind, needed in shapes:
        if needed <= keys:
            names = ", ".join(f"`{name}`" for name in sorted(needed))
            return Detection(kind, f"first record has {names}")
    fields = detect_query_fields(keys)
    if fields:
        return Detection("queries", f"first record has `{fields[0]}` and `{fields[1]}`")
    shown = ", ".join(sorted(keys)[:12])
    raise usage_error(
        "unknown_source_kind",
        f"cannot tell what kind of source this is from its fields ({shown}).",
        hint=f"pass --kind (one of {', '.join(KINDS)}) and the field flags",
        path=path,
    )
