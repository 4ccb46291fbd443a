"""The schema context of a queries item: which collections its database has, and their fields.

A question → query source read with a context file (DocSpider's `collections.json`) puts the
schema in the user message as `Collections: head(age, name); department(id)` (the data
layer's `render_collections`); `schema_of` reads it back from an item's prompt, so that a
query grammar can be limited to those names.
"""

from __future__ import annotations

from dataclasses import dataclass

COLLECTIONS_PREFIX = "Collections: "  # how render_collections starts the context line


@dataclass(frozen=True)
class SchemaContext:
    """Each collection's name with its field names, in the order the context lists them."""

    collections: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def parse(cls, line: str) -> SchemaContext | None:
        """`Collections: a(x, y); b(z)` as a schema; None when the line is not one."""
        if not line.startswith(COLLECTIONS_PREFIX):
            return None
        collections = []
        for part in line[len(COLLECTIONS_PREFIX) :].split("; "):
            name, opening, rest = part.partition("(")
            if not opening or not rest.endswith(")") or not name.strip():
                return None
            fields = tuple(f for f in rest[:-1].split(", ") if f)
            collections.append((name.strip(), fields))
        return cls(tuple(collections))

    def fields(self, collection: str) -> tuple[str, ...]:
        return dict(self.collections).get(collection, ())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.collections)


def schema_of(messages: list[dict]) -> SchemaContext | None:
    """The schema context in the prompt's last user message, or None when it has none."""
    users = [m.get("content") for m in messages if m.get("role") == "user"]
    if not users or not isinstance(users[-1], str):
        return None
    for line in users[-1].splitlines():
        schema = SchemaContext.parse(line.strip())
        if schema is not None:
            return schema
    return None
