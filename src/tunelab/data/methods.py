"""The three training data formats and which one a file holds.

- `supervised`: chat examples, `{"messages": [...]}` ending with the assistant's answer
  (`data.example`, checked by `data.validate`);
- `dpo`: OpenAI's preference format, `{"input": {"messages", "tools"?},
  "preferred_output": [...], "non_preferred_output": [...]}` (`data.preference`);
- `reinforcement`: OpenAI's reinforcement format, `{"messages": [...]}` ending with a user
  turn, plus the fields a grader reads as `{{item.NAME}}` (`data.reinforcement`).

`detect_method` reads the first records of a file: preference keys decide at once; messages
ending with a user turn beside other fields (what a grader reads) are reinforcement items,
messages ending with an answer supervised examples, and a file with both asks for
`--method`. Messages ending with a user turn and nothing else stay supervised (chat data
missing its answers, as the validator then says) unless `--method reinforcement` is given.
Also here: the checks both new formats share (a prompt ending with a user turn, the tools).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from tunelab.data.jsonl import iter_bounded_lines, open_jsonl
from tunelab.data.tokens import RESERVED_SPECIAL_TOKENS
from tunelab.data.validate import (
    BOM,
    CODE_SEVERITY,
    ERROR,
    MAX_LINE_BYTES,
    check_messages,
    special_token_pattern,
)
from tunelab.errors import TunelabError, usage_error

Read = TypeVar("Read")

METHODS = ("supervised", "dpo", "reinforcement")
PREFERENCE_KEYS = frozenset(("input", "preferred_output", "non_preferred_output"))
# A chat example's own keys: any other key beside a prompt is an item field for a grader.
CHAT_KEYS = frozenset(("messages", "tools", "functions", "parallel_tool_calls"))
RESERVED_PATTERN = special_token_pattern(RESERVED_SPECIAL_TOKENS)
# Records read to tell supervised from reinforcement data: enough to see a mix.
DETECTION_RECORDS = 50


@dataclass(frozen=True)
class MethodDetection:
    method: str
    # Why, in words the user can check against the file; None when --method gave it.
    reason: str | None


def resolve_method(path: str | Path, method: str | None) -> MethodDetection:
    """`method` when given (checked), else what `detect_method` finds in the file."""
    if method is None:
        return detect_method(path)
    if method not in METHODS:
        raise usage_error(
            "unknown_method",
            f"unknown method {method!r}.",
            hint=f"one of {', '.join(METHODS)}",
        )
    return MethodDetection(method, None)


def detect_method(path: str | Path) -> MethodDetection:
    """The format of a JSONL file, from its first records (see the module docstring)."""
    seen = set()
    for record in _first_records(path, DETECTION_RECORDS):
        if PREFERENCE_KEYS & set(record):
            return MethodDetection("dpo", "a record has preference keys (input, preferred_output)")
        seen.add(_chat_or_item(record))
    if "reinforcement" in seen and "supervised" in seen:
        raise usage_error(
            "ambiguous_method",
            "some examples end with an answer and some are prompts with item fields: "
            "supervised examples or reinforcement items?",
            hint="pass --training-method supervised, dpo or reinforcement",
            path=path,
        )
    if "reinforcement" in seen:
        return MethodDetection("reinforcement", "prompts end with a user turn, with item fields")
    # Prompts without answers or item fields are chat data missing its answers until
    # --training-method says otherwise; and an unreadable file is for the chat validator to explain.
    return MethodDetection("supervised", "examples end with answers" if seen else None)


def _chat_or_item(record: dict) -> str | None:
    """ "supervised" for messages ending with an answer, "reinforcement" for messages ending
    with a user turn beside fields a grader could read; None when it cannot tell."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    if messages[-1].get("role") != "user":
        return "supervised"
    return "reinforcement" if set(record) - CHAT_KEYS else None


def _first_records(path: str | Path, limit: int) -> list[dict]:
    """Up to `limit` JSON objects from the start of the file; lines that are not are skipped."""
    records = []
    with open_jsonl(path) as handle:
        for _, raw, _ in iter_bounded_lines(handle, MAX_LINE_BYTES):
            try:
                record = orjson.loads(raw) if raw is not None else None
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
            if len(records) >= limit:
                break
    return records


def check_prompt(messages: object, where: str, special: re.Pattern[str]) -> list:
    """Defects of a prompt: a non-empty list of valid messages ending with a user turn."""
    if not isinstance(messages, list) or not messages:
        return [("invalid_input", f"{where} must be a non-empty list of messages")]
    problems = check_messages(messages, special)
    last = messages[-1]
    role = last.get("role") if isinstance(last, dict) else None
    if role != "user":
        text = f"{where} ends with role {role!r}; the last message must be a user turn"
        problems.append(("wrong_last_role", text))
    return problems


def check_tools(tools: object) -> list:
    """`tools`, when present, is a list of objects (function definitions)."""
    if tools is None or (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        return []
    return [("invalid_tools", '"tools" must be a list of tool definitions (objects)')]


def has_error(problems: list) -> bool:
    """Whether any of the (code, message) problems is an error rather than a warning."""
    return any(CODE_SEVERITY[code] == ERROR for code, _ in problems)


def parse_line(path: str | Path, number: int, raw: bytes | None) -> object | None:
    """One line's JSON value (None for a blank line), or a TunelabError at that line."""
    if raw is None:
        text = "the line is too long to be an example"
        raise TunelabError("line_too_long", text, path=path, line=number)
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw.removeprefix(BOM) if number == 1 else raw)
    except orjson.JSONDecodeError as err:
        raise TunelabError(
            "invalid_json", f"invalid JSON: {err.msg}", path=path, line=number
        ) from None


def read_checked(
    path: str | Path,
    check: Callable[[Any], list],
    build: Callable[[Any, int], Read],
    what: str,
) -> list[Read]:
    """Every record of a JSONL file built by `build(record, line)`, each first checked by
    `check` (its problems); a TunelabError at the first line with an error, or when the file
    holds none (`what`: "examples", "items")."""
    read = []
    with open_jsonl(path) as handle:
        for number, raw, _ in iter_bounded_lines(handle, MAX_LINE_BYTES):
            record = parse_line(path, number, raw)
            if record is None:
                continue
            raise_first_error(path, number, check(record))
            read.append(build(record, number))
    if not read:
        raise TunelabError("empty_file", f"{path} has no {what}.", path=path)
    return read


def raise_first_error(path: str | Path, number: int, problems: list) -> None:
    """A TunelabError for the first error among one line's problems, if there is one."""
    for code, text in problems:
        if has_error([(code, text)]):
            hint = f"`tunelab validate {path}` lists every finding"
            raise TunelabError(code, text, hint=hint, path=path, line=number)
