"""`ChatExample`: the one shape every reader produces and every writer consumes.

A chat example is OpenAI's fine-tuning line, `{"messages": [{"role", "content"}, ...]}`,
plus what tunelab knows about where it came from (source line, label for stratified splits).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ChatExample:
    messages: tuple[dict, ...]
    # Class label for classification sources: the split stratifies on it.
    label: str | None = None
    # 1-based line (or record number) in the source, for messages that point back at it.
    source_line: int | None = None
    # Extra top-level keys to keep in the JSONL line (e.g. "tools").
    extra: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        return {"messages": list(self.messages), **self.extra}

    def to_json_line(self) -> bytes:
        """One JSONL line (with trailing newline), UTF-8, non-ASCII kept as is."""
        return orjson.dumps(self.to_record()) + b"\n"

    def dedupe_key(self) -> bytes:
        """Identity for duplicate detection: the exact content of the line, keys sorted."""
        return orjson.dumps(self.to_record(), option=orjson.OPT_SORT_KEYS)


def chat(
    user: str,
    assistant: str,
    system: str | None = None,
    *,
    label: str | None = None,
    source_line: int | None = None,
) -> ChatExample:
    """A single-turn example: optional system prompt, one user message, one answer."""
    messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": assistant})
    return ChatExample(tuple(messages), label=label, source_line=source_line)
