"""OpenAI's reinforcement format: a prompt to answer, and the fields a grader reads.

    {"messages": [{"role": "user", "content": "..."}], "tools": [...],
     "reference_answer": "...", ...}

The messages end with a user turn: the model under training writes the answer, and a grader
scores it, reading the item's other fields as `{{item.NAME}}` (a reference answer, a label,
test cases). `check_reinforcement_record` names every defect with the validator's codes,
`missing_item_field` included when the grader's fields are known (`grader_item_fields`
finds them in a grader's definition); `read_reinforcement_file` is the loader the trainer
uses; `item_from_example` turns a supervised example into an item that keeps its answer as
the reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tunelab.data.example import ChatExample
from tunelab.data.methods import (
    RESERVED_PATTERN,
    check_prompt,
    check_tools,
    read_checked,
)
from tunelab.errors import TunelabError

REFERENCE_FIELD = "reference_answer"
PROMPT_KEYS = frozenset(("messages", "tools", "parallel_tool_calls"))
# `{{ item.name }}` and `{{item.name.sub}}`: the grader reads the item's field `name`.
_ITEM_REFERENCE = re.compile(r"\{\{\s*item\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class ReinforcementItem:
    """A prompt the model answers during training, and the fields its grader reads."""

    messages: tuple[dict, ...]  # ending with a user turn
    fields: dict = field(default_factory=dict)  # read by the grader as {{item.NAME}}
    tools: tuple[dict, ...] | None = None
    source_line: int | None = None
    label: str | None = None  # classification sources: the split stratifies on it

    def to_record(self) -> dict:
        record: dict = {"messages": list(self.messages)}
        if self.tools is not None:
            record["tools"] = list(self.tools)
        return {**record, **self.fields}

    def to_json_line(self) -> bytes:
        return orjson.dumps(self.to_record()) + b"\n"

    def dedupe_key(self) -> bytes:
        return orjson.dumps(self.to_record(), option=orjson.OPT_SORT_KEYS)


def grader_item_fields(grader: object) -> tuple[str, ...]:
    """The item fields a grader definition (any JSON value: its templates, references,
    nested graders) reads as `{{item.NAME}}`, in the order first met."""
    text = grader if isinstance(grader, str) else orjson.dumps(grader).decode()
    return tuple(dict.fromkeys(_ITEM_REFERENCE.findall(text)))


def grader_fields(names: Iterable[str] = (), grader_file: str | Path | None = None):
    """The item fields required of every item: those named, and those a grader definition
    (a JSON file) reads."""
    found = list(names)
    if grader_file is not None:
        path = Path(grader_file)
        try:
            grader = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise TunelabError("file_not_found", f"{path} does not exist.", path=path) from None
        except orjson.JSONDecodeError as err:
            text = f"the grader definition is not JSON: {err.msg}"
            raise TunelabError("invalid_grader_file", text, path=path) from None
        found.extend(grader_item_fields(grader))
    return tuple(dict.fromkeys(found))


def item_from_example(example: ChatExample, reference_field: str = REFERENCE_FIELD):
    """The item of a supervised example: the messages before its last answer, which becomes
    the `reference_field`; a classification example also keeps its `label`. None when the
    example has no answer."""
    messages = list(example.messages)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or not any(m["role"] == "user" for m in messages[:last]):
        return None
    fields = {reference_field: messages[last]["content"]}
    if example.label is not None and reference_field != "label":
        fields["label"] = example.label
    return ReinforcementItem(
        tuple(messages[:last]), fields, source_line=example.source_line, label=example.label
    )


def check_reinforcement_record(
    record: object,
    required_fields: Iterable[str] = (),
    special: re.Pattern[str] = RESERVED_PATTERN,
) -> list:
    """Every defect of one parsed line, as (code, message) pairs; [] for a clean item.

    Keys other than the prompt's are item fields; `required_fields` are those the grader
    reads, each of which the item must have.
    """
    if not isinstance(record, dict):
        return [("not_an_object", "the line is not a JSON object")]
    if "messages" not in record:
        return [("missing_messages", 'the item has no "messages" list')]
    problems = check_prompt(record["messages"], '"messages"', special)
    problems = [
        ("messages_not_a_list" if code == "invalid_input" else code, text)
        for code, text in problems
    ]
    problems.extend(check_tools(record.get("tools")))
    for name in required_fields:
        if name not in record:
            text = f"the grader reads {{{{item.{name}}}}}, which this item does not have"
            problems.append(("missing_item_field", text))
    return problems


def item_from_record(record: dict, line: int | None = None) -> ReinforcementItem:
    """The item of a record `check_reinforcement_record` found no error in."""
    tools = record.get("tools")
    return ReinforcementItem(
        tuple(record["messages"]),
        {k: v for k, v in record.items() if k not in PROMPT_KEYS},
        tools=tuple(tools) if tools is not None else None,
        source_line=line,
    )


def read_reinforcement_file(
    path: str | Path, required_fields: Iterable[str] = ()
) -> list[ReinforcementItem]:
    """Every item of a reinforcement JSONL file; a `TunelabError` with the file and line of
    the first defect that is an error. `required_fields`: those the grader reads."""
    required = tuple(required_fields)

    def check(record) -> list:
        return check_reinforcement_record(record, required)

    return read_checked(path, check, item_from_record, "items")
