"""Classification tables (CSV or TSV, also JSON/JSONL records) as single-turn chat examples.

Each row has a text column and a label column. The user message is built by
`ClassificationPrompt.user_message` (instruction, the sorted list of categories, the text);
the answer by `ClassificationPrompt.answer`. The file is read twice, streaming both times:
once to collect the categories every prompt lists, once to build the examples.
Labels are stripped of surrounding whitespace; an empty text or label is an error.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunelab.data.example import ChatExample, chat
from tunelab.data.prompts import ClassificationPrompt
from tunelab.data.sources.options import SourceOptions
from tunelab.data.sources.records import Reading, bad_record, iter_records, table_delimiter
from tunelab.errors import TunelabError

DEFAULT_SYSTEM = "You classify text into one of a fixed set of categories."


@dataclass(frozen=True)
class TableHead:
    """A table's columns and its first rows (each cell as the file holds it), for a preview."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def head_table(path: Path, limit: int = 8) -> TableHead | None:
    """The header and first `limit` rows of a CSV or TSV file, read as the readers read it;
    None when the file is not a table or has no row."""
    if table_delimiter(path) is None:
        return None
    records = [record for _, record in itertools.islice(iter_records(path), limit)]
    if not records:
        return None
    columns = tuple(records[0])
    return TableHead(columns, tuple(tuple(r[name] for name in columns) for r in records))


def read_classification(path: Path, options: SourceOptions | None = None) -> Reading:
    """Reads the text and label columns `options` name (default `text` and `label`).
    `options.system=None` uses `DEFAULT_SYSTEM`; `system=""` writes no system message."""
    options = options or SourceOptions()
    columns = {"text": options.text_column or "text", "label": options.label_column or "label"}
    labels = sorted({label for _, _, label in _rows(path, columns)})
    if not labels:
        raise TunelabError("empty_source", f"{path} has no rows.", path=path)
    prompt = options.prompt or ClassificationPrompt()
    system = DEFAULT_SYSTEM if options.system is None else options.system
    examples = _examples(path, columns, labels, prompt, system or None)
    return Reading(examples, fields=columns, system=system or None, labels=labels)


def _examples(
    path: Path,
    columns: dict[str, str],
    labels: list[str],
    prompt: ClassificationPrompt,
    system: str | None,
) -> Iterator[ChatExample]:
    for line, text, label in _rows(path, columns):
        user = prompt.user_message(text, labels)
        yield chat(user, prompt.answer(label), system, label=label, source_line=line)


def _rows(path: Path, columns: dict[str, str]) -> Iterator[tuple[int, str, str]]:
    """(line, text, label) for every row, checked."""
    for line, record in iter_records(path):
        for name in columns.values():
            if name not in record:
                shown = ", ".join(sorted(record))
                raise TunelabError(
                    "missing_column",
                    f"no column `{name}` (columns: {shown}).",
                    hint="name the columns with --text-column and --label-column",
                    path=path,
                    line=line,
                )
        text, label = record[columns["text"]], record[columns["label"]]
        if not isinstance(text, str) or not text.strip():
            raise bad_record(path, line, f"`{columns['text']}` is empty or not text.")
        # JSON sources often number their classes; a number label is its decimal text.
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        label = label.strip() if isinstance(label, str) else ""
        if not label or "\n" in label:
            raise bad_record(path, line, f"`{columns['label']}` must be one line of text.")
        yield line, text, label
