"""`tunelab eval tools`: does a model call the right tool, with valid and right arguments?

The items are the chat examples of a JSONL file whose last assistant message makes tool
calls: the messages before it are the prompt, its calls the reference, the example's
`tools` what the model is shown (its provider renders them in the model's tool format, as
training on tool calls did). Each answer is scored on three steps, every call of the
reference in order:

- `function_match`: the answer calls the reference's functions, in order;
- `arguments_valid`: every call names a declared tool and its arguments are a JSON object
  valid against that tool's parameters schema (`data.tool_calls.call_problem`, the check
  `tunelab validate` applies to training data);
- `exact_match`: the right functions with arguments equal to the reference's as JSON
  (key order and spacing aside).

`no_call_rate` is the share of answers that call nothing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import orjson

from tunelab.data.jsonl import iter_lines, open_jsonl
from tunelab.data.tool_calls import call_problem, declared_functions, read_arguments
from tunelab.errors import TunelabError
from tunelab.evals.candidates import Interrupted, answer_all
from tunelab.evals.items import describe_data
from tunelab.evals.result import TaskResult, partial_of
from tunelab.io import file_sha256
from tunelab.types import Answer

MAX_TOKENS = 256  # a few calls with their arguments


@dataclass(frozen=True)
class ToolItem:
    """One prompt, the tools it offers and the calls it expects (name, arguments object)."""

    messages: list[dict]
    tools: list[dict]
    reference: list[tuple[str, dict]]
    source_line: int

    @property
    def tools_key(self) -> str:
        """The tools as text: items offering the same tools are answered in one batch."""
        return json.dumps(self.tools, sort_keys=True)


@dataclass(frozen=True)
class ToolData:
    path: Path
    items: list[ToolItem]
    n_skipped: int  # examples whose last answer makes no call
    checksum: str

    def describe(self) -> dict:
        return describe_data(self.path, "chat", self.items, self.checksum, n_skipped=self.n_skipped)


def load_tool_items(path: Path, limit: int | None = None) -> ToolData:
    """The first `limit` tool-calling items of a chat JSONL file (all when None)."""
    items, skipped = [], 0
    with open_jsonl(path) as handle:
        for number, line in iter_lines(handle):
            if not line.strip():
                continue
            item = _item(orjson.loads(line), number)
            if item is None:
                skipped += 1
                continue
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise TunelabError(
            "no_tool_calls",
            f"{path} has no example whose last assistant message makes tool calls.",
            hint="evaluate a chat JSONL file with `tools` and assistant `tool_calls`",
            path=path,
        )
    return ToolData(Path(path), items, skipped, file_sha256(path))


def _item(record: object, number: int) -> ToolItem | None:
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list):
        return None
    answers = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not answers or not messages[answers[-1]].get("tool_calls"):
        return None
    last = answers[-1]
    reference = []
    for call in messages[last]["tool_calls"]:
        function = call.get("function") or {}
        arguments, _ = read_arguments(function.get("arguments") or "{}")
        reference.append((function.get("name"), arguments or {}))
    tools = record.get("tools") or []
    return ToolItem(messages[:last], tools, reference, number)


@dataclass(frozen=True, kw_only=True)
class ToolCallResult(TaskResult):
    """What `evaluate_tool_calls` returns; `answers` holds one scored row per item."""

    models: dict[str, dict]  # per model: function_match, arguments_valid, exact_match, ...


def score_calls(item: ToolItem, answer: Answer) -> dict:
    """One answer's row: its calls, and whether each step of the reference was met."""
    declared = declared_functions({"tools": item.tools}) or {}
    calls = [(call.name, call.arguments) for call in answer.tool_calls]
    names_match = [name for name, _ in calls] == [name for name, _ in item.reference]
    valid = bool(calls) and all(not call_problem(n, a, declared)[0] for n, a in calls)
    values = [read_arguments(arguments)[0] for _, arguments in calls]
    equal = names_match and values == [arguments for _, arguments in item.reference]
    return {
        "question": _last_user(item.messages),
        "gold": "\n".join(_written(n, a) for n, a in item.reference),
        "answer": answer.text or "\n".join(_written(n, a) for n, a in calls),
        "calls": [{"name": n, "arguments": a} for n, a in calls],
        "function_match": names_match,
        "arguments_valid": valid,
        "exact": equal,
        "error": answer.error,
        "source_line": item.source_line,
    }


def _written(name: object, arguments: object) -> str:
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return f"{name}({arguments})"


def _last_user(messages: list[dict]) -> str:
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""


def summarise(rows: list[dict], seconds: float) -> dict:
    """A model's figures over its scored rows."""
    n = len(rows)

    def share(key: str) -> float:
        return sum(bool(row[key]) for row in rows) / n

    return {
        "n_items": n,
        "function_match": share("function_match"),
        "arguments_valid": share("arguments_valid"),
        "exact_match": share("exact"),
        "no_call_rate": sum(not row["calls"] for row in rows) / n,
        "n_errors": sum(row["error"] is not None for row in rows),
        "answers_per_second": round(n / seconds, 2) if seconds > 0 else None,
    }


def evaluate_tool_calls(
    data: ToolData, models: list[str], *, progress=None, cancel=None
) -> ToolCallResult:
    """Each model asked every item with its tools; its calls scored (see the module)."""
    results, outputs = {}, {}
    for name in models:
        rows, seconds, stopped = _answer_items(name, data, progress, cancel)
        if rows:
            outputs[name] = rows
            results[name] = summarise(rows, seconds)
        if stopped:
            break
    return ToolCallResult(
        models=results,
        answers=outputs,
        partial=partial_of(outputs, models, len(data.items)),
    )


def _answer_items(name, data: ToolData, progress, cancel) -> tuple[list[dict], float, bool]:
    """The model's scored rows in item order (those before a cancel), the seconds they took
    and whether a cancel stopped it. Items offering the same tools are asked together."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(data.items):
        groups[item.tools_key].append(index)
    answers: dict[int, Answer] = {}
    seconds, stopped = 0.0, False
    for indices in groups.values():
        conversations = [data.items[i].messages for i in indices]
        tools = data.items[indices[0]].tools
        try:
            found, took = answer_all(
                name,
                conversations,
                max_tokens=MAX_TOKENS,
                progress=progress,
                cancel=cancel,
                tools=tools,
            )
        except Interrupted as stop:
            found, took, stopped = stop.done, stop.seconds, True
        answers.update(zip(indices, found, strict=False))
        seconds += took
        if stopped:
            break
    scored = []
    for index in range(len(data.items)):  # in file order, up to the first unanswered item
        if index not in answers:
            break
        scored.append(score_calls(data.items[index], answers[index]))
    return scored, seconds, stopped
