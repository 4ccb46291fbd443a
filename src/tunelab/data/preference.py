"""OpenAI's preference (DPO) format: one prompt, a preferred and a non-preferred answer.

    {"input": {"messages": [...], "tools": [...]},
     "preferred_output": [{"role": "assistant", "content": "..."}],
     "non_preferred_output": [{"role": "assistant", "content": "..."}]}

The input's messages end with a user turn; each output is a list of assistant messages (one,
in OpenAI's examples). `check_preference_record` names every defect with the validator's
codes; `read_preference_file` is the loader the trainer uses: every example, or a
`TunelabError` at the first line with an error; `correction_pairs` makes pairs of a
model's wrong answers (`tunelab format --to preference --from-eval`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tunelab.data.methods import (
    RESERVED_PATTERN,
    check_prompt,
    check_tools,
    has_error,
    read_checked,
)
from tunelab.data.validate import check_messages

OUTPUT_KEYS = ("preferred_output", "non_preferred_output")
INPUT_KEYS = frozenset(("messages", "tools", "parallel_tool_calls"))


@dataclass(frozen=True)
class PreferenceExample:
    """A prompt and two answers to it, the first preferred."""

    messages: tuple[dict, ...]  # the prompt, ending with a user turn
    preferred: tuple[dict, ...]  # assistant messages
    non_preferred: tuple[dict, ...]
    tools: tuple[dict, ...] | None = None
    # Where it came from: source line, and a classification label for stratified splits.
    source_line: int | None = None
    label: str | None = None
    extra: dict = field(default_factory=dict)  # other input keys, kept as they are

    def to_record(self) -> dict:
        prompt = {"messages": list(self.messages), **self.extra}
        if self.tools is not None:
            prompt["tools"] = list(self.tools)
        return {
            "input": prompt,
            "preferred_output": list(self.preferred),
            "non_preferred_output": list(self.non_preferred),
        }

    def to_json_line(self) -> bytes:
        return orjson.dumps(self.to_record()) + b"\n"

    def dedupe_key(self) -> bytes:
        return orjson.dumps(self.to_record(), option=orjson.OPT_SORT_KEYS)

    def conversations(self) -> tuple[list[dict], list[dict]]:
        """The prompt followed by each answer: what token counting and training see."""
        return [*self.messages, *self.preferred], [*self.messages, *self.non_preferred]


def preference_pair(
    messages: list[dict], preferred: str, rejected: str, **where
) -> PreferenceExample:
    """A single-turn pair from two answer texts."""
    return PreferenceExample(
        tuple(messages),
        ({"role": "assistant", "content": preferred},),
        ({"role": "assistant", "content": rejected},),
        **where,
    )


def correction_pairs(answered: Iterable[tuple[list[dict], str, str, int | None]]):
    """Pairs that teach a model out of its mistakes: for each (prompt, gold answer, wrong
    answer, source line), the gold answer preferred and the wrong one not. An empty wrong
    answer, or one identical to the gold, teaches nothing and is left out; a pair met twice
    (two models' same mistake) is kept once. Returns the pairs and how many were left out."""
    pairs: list[PreferenceExample] = []
    seen: set[bytes] = set()
    left_out = 0
    for messages, gold, wrong, line in answered:
        if not wrong.strip() or wrong.strip() == gold.strip():
            left_out += 1
            continue
        pair = preference_pair(messages, gold, wrong, source_line=line)
        key = pair.dedupe_key()
        if key not in seen:
            seen.add(key)
            pairs.append(pair)
    return pairs, left_out


def check_preference_record(record: object, special: re.Pattern[str] = RESERVED_PATTERN) -> list:
    """Every defect of one parsed line, as (code, message) pairs; [] for a clean example."""
    if not isinstance(record, dict):
        return [("not_an_object", "the line is not a JSON object")]
    problems = [
        ("unrecognized_key", f"unrecognized key {key!r}: the preference format has no such key")
        for key in record
        if key not in ("input", *OUTPUT_KEYS)
    ]
    prompt = record.get("input")
    if prompt is None:
        problems.append(("missing_input", 'the example has no "input" object'))
    elif not isinstance(prompt, dict):
        problems.append(("invalid_input", '"input" must be an object with "messages"'))
    else:
        problems.extend(_check_input(prompt, special))
    for key in OUTPUT_KEYS:
        if key not in record:
            problems.append(("missing_output", f'the example has no "{key}"'))
        else:
            problems.extend(_check_output(record[key], key, special))
    if not has_error(problems) and record[OUTPUT_KEYS[0]] == record[OUTPUT_KEYS[1]]:
        text = "the preferred and non-preferred outputs are identical: nothing to learn"
        problems.append(("identical_outputs", text))
    return problems


def _check_input(prompt: dict, special: re.Pattern[str]) -> list:
    problems = [
        ("unrecognized_key", f'"input" has an unrecognized key {key!r}')
        for key in prompt
        if key not in INPUT_KEYS
    ]
    problems.extend(check_prompt(prompt.get("messages"), '"input.messages"', special))
    return problems + check_tools(prompt.get("tools"))


def _check_output(output: object, key: str, special: re.Pattern[str]) -> list:
    if not isinstance(output, list) or not output:
        return [("invalid_output", f'"{key}" must be a non-empty list of assistant messages')]
    problems = [(code, f'"{key}": {text}') for code, text in check_messages(output, special)]
    roles = {m.get("role") for m in output if isinstance(m, dict)}
    if roles - {"assistant"}:
        problems.append(("invalid_output", f'"{key}" holds a message that is not an assistant'))
    return problems


def example_from_record(record: dict, line: int | None = None) -> PreferenceExample:
    """The example of a record `check_preference_record` found no error in."""
    prompt = record["input"]
    tools = prompt.get("tools")
    return PreferenceExample(
        tuple(prompt["messages"]),
        tuple(record["preferred_output"]),
        tuple(record["non_preferred_output"]),
        tools=tuple(tools) if tools is not None else None,
        source_line=line,
        extra={k: v for k, v in prompt.items() if k not in ("messages", "tools")},
    )


def read_preference_file(path: str | Path) -> list[PreferenceExample]:
    """Every example of a preference JSONL file; a `TunelabError` with the file and line of
    the first defect that is an error (`tunelab validate` lists them all)."""
    return read_checked(path, check_preference_record, example_from_record, "examples")
