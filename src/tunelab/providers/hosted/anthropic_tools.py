"""OpenAI's tools as Anthropic's tool use, and Anthropic's tool use blocks back as OpenAI's
tool calls.

A request's `tools` become Anthropic's (`input_schema` is the function's `parameters`),
`tool_choice` its own (`auto`, `required` → `any`, a named function → `tool`, `none`), and
`parallel_tool_calls: false` its `disable_parallel_tool_use`. In the conversation, an
assistant's `tool_calls` become `tool_use` blocks and `tool` messages `tool_result` blocks
of one user turn. An answer's `tool_use` blocks come back as `ToolCall`s, the input written
as JSON text as OpenAI sends arguments; streamed, a block's input arrives in pieces
(`input_json_delta`) that `ToolUseParts` puts together.
"""

from __future__ import annotations

import json
from typing import Any

from tunelab.errors import TunelabError
from tunelab.types import ToolCall

# A function without parameters still takes an object, as Anthropic requires a schema.
NO_PARAMETERS = {"type": "object", "properties": {}}
TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def tool_settings(settings: dict) -> dict:
    """The Messages API's `tools` and `tool_choice` for a request's OpenAI settings (empty
    when it names no tools)."""
    if not settings.get("tools"):
        return {}
    request: dict[str, Any] = {"tools": [_tool(tool) for tool in settings["tools"]]}
    choice = _tool_choice(settings.get("tool_choice"))
    if settings.get("parallel_tool_calls") is False and choice.get("type") != "none":
        choice = {"type": "auto", **choice, "disable_parallel_tool_use": True}
    if choice:
        request["tool_choice"] = choice
    return request


def _tool(tool: dict) -> dict:
    function = tool.get("function") or {}
    if function.get("strict"):
        raise TunelabError(
            "unsupported_parameter",
            f"the anthropic provider does not support `strict` tools (`{function.get('name')}`); "
            "leave `strict` out.",
            hint="Anthropic checks the arguments against `parameters` as its model writes them",
        )
    described = {"description": function["description"]} if function.get("description") else {}
    return {
        "name": function.get("name", ""),
        **described,
        "input_schema": function.get("parameters") or NO_PARAMETERS,
    }


def _tool_choice(choice: str | dict | None) -> dict:
    if choice is None:
        return {}
    if isinstance(choice, str):
        return dict(TOOL_CHOICES[choice])
    return {"type": "tool", "name": choice["function"]["name"]}


def turns(messages: list[dict]) -> list[dict]:
    """The conversation's turns other than the system's, as the Messages API takes them."""
    result: list[dict] = []
    for message in messages:
        role = message["role"]
        if role == "system":
            continue
        if role == "tool":
            _add_tool_result(result, message)
        elif role == "assistant" and message.get("tool_calls"):
            result.append({"role": "assistant", "content": _tool_uses(message)})
        else:
            result.append({"role": role, "content": message["content"]})
    return result


def _add_tool_result(result: list[dict], message: dict) -> None:
    """A tool's answer, in the user turn that holds the answers to the calls before it."""
    block = {
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id") or "",
        "content": message.get("content") or "",
    }
    last = result[-1] if result else None
    if last and last["role"] == "user" and _holds_tool_results(last):
        last["content"].append(block)
    else:
        result.append({"role": "user", "content": [block]})


def _holds_tool_results(turn: dict) -> bool:
    content = turn["content"]
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


def _tool_uses(message: dict) -> list[dict]:
    """An assistant's turn with tool calls: its text, then one `tool_use` block per call."""
    text = message.get("content")
    blocks: list[dict] = [{"type": "text", "text": text}] if text else []
    for call in message["tool_calls"]:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name", ""),
                "input": _arguments(function.get("name"), function.get("arguments")),
            }
        )
    return blocks


def _arguments(name: str | None, arguments: str | None) -> Any:
    try:
        return json.loads(arguments or "{}")
    except ValueError:
        raise TunelabError(
            "invalid_tool_call",
            f"the earlier call of `{name}` has arguments that are not JSON, which Anthropic "
            "needs as an object.",
            hint="send each tool call's arguments as the JSON text the model wrote",
        ) from None


def tool_call(block: Any) -> ToolCall:
    """An answer's `tool_use` block as OpenAI's tool call."""
    return ToolCall(block.id, block.name, json.dumps(block.input, ensure_ascii=False))


class ToolUseParts:
    """A streamed answer's tool use blocks, put together from their events."""

    def __init__(self) -> None:
        self._blocks: dict[int, tuple[str, str, list[str]]] = {}

    def start(self, index: int, block: Any) -> None:
        self._blocks[index] = (block.id, block.name, [])

    def add(self, index: int, partial_json: str) -> None:
        if index in self._blocks:
            self._blocks[index][2].append(partial_json)

    def calls(self) -> tuple[ToolCall, ...]:
        """The calls in the answer's order; a call without input takes none (`{}`)."""
        return tuple(
            ToolCall(call_id, name, "".join(parts) or "{}")
            for _, (call_id, name, parts) in sorted(self._blocks.items())
        )
