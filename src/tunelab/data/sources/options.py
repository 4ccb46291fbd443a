"""How to read a source: `SourceOptions`, the one object every reader and the detection take.

None means "not given": detect it or use the default. The options that apply to one kind
only are listed in `KIND_OPTIONS`, so that an option given for another kind is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.data.prompts import ClassificationPrompt
from tunelab.data.sources.conversations_db import ConversationSchema


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


# The options that apply to one kind only, each read by that kind's reader.
KIND_OPTIONS = {
    "queries": ("question_field", "answer_field", "context_field", "context_file"),
    "classification": ("text_column", "label_column", "prompt"),
    "conversations": ("schema", "max_conversations"),
}
