"""Readers: every kind of source → a lazy stream of `ChatExample`s.

`read_source(path, kind, options)` dispatches to the reader of `kind` (one of `KINDS`);
`detect_kind` guesses the kind when the user does not say. Each reader returns a `Reading`:
the examples plus what it found out (fields used and detected, system prompt, labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.data.prompts import ClassificationPrompt
from tunelab.data.sources.chat_formats import read_alpaca, read_chat, read_completion, read_sharegpt
from tunelab.data.sources.conversations_db import (
    ConversationSchema,
    DatabasePreview,
    preview_conversations,
    read_conversations,
)
from tunelab.data.sources.detect import KINDS, Detection, detect_kind
from tunelab.data.sources.query_pairs import read_query_pairs
from tunelab.data.sources.records import Reading
from tunelab.data.sources.tables import read_classification
from tunelab.errors import usage_error

__all__ = [
    "KINDS",
    "ConversationSchema",
    "DatabasePreview",
    "Detection",
    "Reading",
    "SourceOptions",
    "detect_kind",
    "detect_source_kind",
    "preview_conversations",
    "read_source",
]


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source. None means "not given": detect it or use the default."""

    # Applies to every kind: replaces the default or stored system prompt ("" for none).
    system: str | None = None
    # queries
    question_field: str | None = None
    answer_field: str | None = None
    context_field: str | None = None
    context_file: Path | None = None
    # classification
    text_column: str | None = None
    label_column: str | None = None
    prompt: ClassificationPrompt | None = None
    # conversations
    schema: ConversationSchema | None = None
    max_conversations: int | None = None

    def __post_init__(self) -> None:
        # The Python API accepts plain strings for paths, as the CLI does.
        if self.context_file is not None:
            object.__setattr__(self, "context_file", Path(self.context_file))

    def given_for_other_kinds(self, kind: str) -> list[str]:
        """Options that were set but do not apply to `kind` (their field names)."""
        return [
            name
            for other, names in KIND_OPTIONS.items()
            if other != kind
            for name in names
            if getattr(self, name) is not None
        ]

    def for_kind(self, kind: str) -> dict:
        """The options of `kind`'s reader (see `KIND_OPTIONS`), by name."""
        return {name: getattr(self, name) for name in KIND_OPTIONS[kind]}


# The options that apply to one kind only, each read by that kind's reader.
KIND_OPTIONS = {
    "queries": ("question_field", "answer_field", "context_field", "context_file"),
    "classification": ("text_column", "label_column", "prompt"),
    "conversations": ("schema", "max_conversations"),
}


def detect_source_kind(path: Path, options: SourceOptions) -> Detection:
    """`detect_kind`, told the fields the options name."""
    return detect_kind(
        path,
        question_field=options.question_field,
        text_column=options.text_column,
        label_column=options.label_column,
    )


def read_source(path: Path, kind: str, options: SourceOptions | None = None) -> Reading:
    options = options or SourceOptions()
    if kind == "conversations":
        limit = options.max_conversations or 0
        return read_conversations(
            path, schema=options.schema, max_conversations=limit, system=options.system
        )
    structured = {"queries": read_query_pairs, "classification": read_classification}
    if kind in structured:
        return structured[kind](path, **options.for_kind(kind), system=options.system)
    readers = {
        "chat": read_chat,
        "alpaca": read_alpaca,
        "sharegpt": read_sharegpt,
        "completion": read_completion,
    }
    if kind not in readers:
        raise usage_error(
            "unknown_kind", f"unknown kind {kind!r}.", hint=f"one of {', '.join(KINDS)}"
        )
    return readers[kind](path, options.system)
