"""Readers: every kind of source → a lazy stream of `ChatExample`s.

`read_source(path, kind, options)` dispatches to the reader of `kind` (one of `KINDS`);
`detect_kind` guesses the kind when the user does not say. Each reader returns a `Reading`:
the examples plus what it found out (fields used and detected, system prompt, labels).
"""

from __future__ import annotations

from pathlib import Path

from tunelab.data.sources.chat_formats import read_alpaca, read_chat, read_completion, read_sharegpt
from tunelab.data.sources.conversations_db import (
    ConversationSchema,
    DatabasePreview,
    preview_conversations,
    read_conversations,
)
from tunelab.data.sources.detect import KINDS, Detection, detect_kind
from tunelab.data.sources.options import SourceOptions
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
    "preview_conversations",
    "read_source",
]


def read_source(path: Path, kind: str, options: SourceOptions | None = None) -> Reading:
    options = options or SourceOptions()
    if kind == "conversations":
        limit = options.max_conversations or 0
        return read_conversations(
            path, schema=options.schema, max_conversations=limit, system=options.system
        )
    structured = {"queries": read_query_pairs, "classification": read_classification}
    if kind in structured:
        return structured[kind](path, options)
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
