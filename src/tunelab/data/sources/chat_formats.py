"""Chat-shaped records: OpenAI chat JSONL, Alpaca, ShareGPT and prompt/completion.

- chat: `{"messages": [...]}`, normalised: roles checked (aliases like `human`/`gpt`
  mapped), message keys OpenAI accepts kept (`role`, `content`, `name`, `weight`,
  `tool_calls`, `tool_call_id`, `function_call`), record keys `tools`, `functions` and
  `parallel_tool_calls` kept; anything else (ids, metadata) is dropped.
- alpaca: `instruction`, optional `input`, `output` → user `instruction` (+ blank line +
  `input` when it is not empty), assistant `output`.
- sharegpt: `conversations: [{"from", "value"}, ...]` (also `role`/`content`); human/user →
  user, gpt/assistant/model → assistant, system → system; a top-level `system` key becomes
  the system message.
- completion: `prompt`, `completion` → user, assistant.

`system`: None keeps the source's system messages (chat, sharegpt) or adds none (alpaca,
completion); a string replaces them (an empty string removes them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from tunelab.data.example import ChatExample
from tunelab.data.sources.records import Reading, bad_record, iter_records, normalise_role

MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call")
RECORD_KEYS = ("tools", "functions", "parallel_tool_calls")

Convert = Callable[[dict, Path, int], tuple[list[dict], dict]]


def read_chat(path: Path, system: str | None = None) -> Reading:
    return _read(path, _chat_messages, system, {"messages": "messages"})


def read_alpaca(path: Path, system: str | None = None) -> Reading:
    fields = {"instruction": "instruction", "input": "input", "output": "output"}
    return _read(path, _alpaca_messages, system, fields)


def read_sharegpt(path: Path, system: str | None = None) -> Reading:
    return _read(path, _sharegpt_messages, system, {"conversations": "conversations"})


def read_completion(path: Path, system: str | None = None) -> Reading:
    fields = {"prompt": "prompt", "completion": "completion"}
    return _read(path, _completion_messages, system, fields)


def _read(path: Path, convert: Convert, system: str | None, fields: dict) -> Reading:
    return Reading(_examples(path, convert, system), fields=fields, system=system or None)


def _examples(path: Path, convert: Convert, system: str | None) -> Iterator[ChatExample]:
    for line, record in iter_records(path):
        messages, extra = convert(record, path, line)
        if system is not None:
            messages = [m for m in messages if m["role"] != "system"]
            if system:
                messages.insert(0, {"role": "system", "content": system})
        yield ChatExample(tuple(messages), source_line=line, extra=extra)


def _chat_messages(record: dict, path: Path, line: int) -> tuple[list[dict], dict]:
    raw = record.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_record(path, line, "`messages` must be a non-empty list.")
    messages = []
    for number, message in enumerate(raw, start=1):
        if not isinstance(message, dict):
            raise bad_record(path, line, f"message {number} is not an object.")
        role = _role(message.get("role"), path, line, number)
        content = message.get("content")
        calls = message.get("tool_calls") or message.get("function_call")
        if not (isinstance(content, (str, list)) or (content is None and calls)):
            raise bad_record(path, line, f"message {number} has no text `content`.")
        kept = {key: message[key] for key in MESSAGE_KEYS if key in message}
        messages.append({**kept, "role": role})
    extra = {key: record[key] for key in RECORD_KEYS if key in record}
    return messages, extra


def _alpaca_messages(record: dict, path: Path, line: int) -> tuple[list[dict], dict]:
    instruction = _text(record, "instruction", path, line)
    output = _text(record, "output", path, line)
    extra_input = record.get("input") or ""
    if not isinstance(extra_input, str):
        raise bad_record(path, line, "`input` must be text.")
    user = f"{instruction}\n\n{extra_input}" if extra_input.strip() else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}], {}


def _sharegpt_messages(record: dict, path: Path, line: int) -> tuple[list[dict], dict]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise bad_record(path, line, "`conversations` must be a non-empty list.")
    messages = []
    if isinstance(record.get("system"), str) and record["system"].strip():
        messages.append({"role": "system", "content": record["system"]})
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise bad_record(path, line, f"turn {number} is not an object.")
        role = _role(turn.get("from", turn.get("role")), path, line, number)
        value = turn.get("value", turn.get("content"))
        if not isinstance(value, str):
            raise bad_record(path, line, f"turn {number} has no text `value`.")
        messages.append({"role": role, "content": value})
    return messages, {}


def _completion_messages(record: dict, path: Path, line: int) -> tuple[list[dict], dict]:
    prompt = _text(record, "prompt", path, line)
    completion = _text(record, "completion", path, line)
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], {}


def _text(record: dict, key: str, path: Path, line: int) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise bad_record(path, line, f"`{key}` must be non-empty text.")
    return value


def _role(value: object, path: Path, line: int, number: int) -> str:
    role = normalise_role(value)
    if role is None:
        raise bad_record(
            path,
            line,
            f"message {number} has role {value!r}.",
            hint="roles are system, user, assistant, tool (human/gpt/model are mapped)",
        )
    return role
