"""Evaluation items from any source `tunelab format` reads: the prompt and the gold answer.

`--data` takes the same sources and field flags as `tunelab format`, so a model is asked
exactly what a fine-tuned model was trained on: the same system prompt, the same template,
the same schema context. The last assistant message of each example is the gold answer; the
messages before it are the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.data.sources import SourceOptions, detect_kind, read_source
from tunelab.errors import TunelabError, usage_error
from tunelab.io import file_sha256


@dataclass(frozen=True)
class EvalItem:
    messages: list[dict]  # the prompt: every message before the gold answer
    gold: str  # the gold assistant answer, as written
    label: str | None = None  # classification sources: the label
    source_line: int | None = None

    @property
    def question(self) -> str:
        """The last user message: what a report shows for the item."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass(frozen=True)
class EvalData:
    path: Path
    kind: str
    items: list[EvalItem]
    labels: list[str]  # classification sources: the categories (else empty)
    checksum: str

    def conversations(self) -> list[list[dict]]:
        """Each item's messages: what a model answers."""
        return [item.messages for item in self.items]

    def describe(self) -> dict:
        return describe_data(self.path, self.kind, self.items, self.checksum)


def describe_data(path: Path, kind: str, items: list, checksum: str, **counts: int) -> dict:
    """What an evaluation run records about its data file (`data` of the run): where it is,
    its kind, how many items it gave (and `counts` of others, such as those skipped), and
    its checksum."""
    return {"path": str(path), "kind": kind, "n_items": len(items), **counts, "sha256": checksum}


def load_items(
    path: Path,
    kind: str | None = None,
    options: SourceOptions | None = None,
    limit: int | None = None,
) -> EvalData:
    """The first `limit` items of the source (all when None), in file order."""
    path = Path(path)
    if not path.is_file():
        raise usage_error("file_not_found", f"{path} does not exist.", path=path)
    options = options or SourceOptions()
    if kind is None:
        kind = detect_kind(path, options).kind
    reading = read_source(path, kind, options)
    items = []
    for example in reading.examples:
        item = _item(example, path)
        if item is not None:
            items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise TunelabError(
            "no_items", f"{path} has no example with an assistant answer.", path=path
        )
    return EvalData(path, kind, items, list(reading.labels), file_sha256(path))


def _item(example, path: Path) -> EvalItem | None:
    messages = list(example.messages)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    return EvalItem(messages[:last], messages[last]["content"], example.label, example.source_line)
