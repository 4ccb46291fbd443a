"""How a model's tool calls are constrained and read back, for answering with tools.

The text of a conversation with tools (the template's own tool format, or tunelab's default
`hermes` blocks) is `tunelab.data.tool_text`'s, which training, answering and token counts
share. Here: `grammar` gives the constraint that makes a model call one of the tools with
arguments valid against its JSON Schema, in its template's call style; `parse` reads the
calls back.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence

from tunelab.data.tool_text import CALL_CLOSE, CALL_OPEN, ToolFormat, functions
from tunelab.engine.grammar import JSON_LAYOUT, Constraint
from tunelab.types import ToolCall

__all__ = ["ToolFormat", "grammar", "parse"]

_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def grammar(form: ToolFormat, tools: Sequence[dict], *, parallel: bool = True) -> Constraint:
    """The grammar of an answer that is only calls of `tools` (several if `parallel`), each
    naming one of them with arguments valid against its parameters' schema."""
    key = "arguments" if form.style == "hermes" else "parameters"
    options = [_call_schema(f, key) for f in functions(tools)]
    alternatives = " | ".join(f"%json {json.dumps(option)}" for option in options)
    if form.style == "llama3":
        return Constraint.lark(f"start: {alternatives}")
    repeat = '("\\n" call)*' if parallel else ""
    block = f'call: "{CALL_OPEN}\\n" ({alternatives}) "\\n{CALL_CLOSE}"'
    return Constraint.lark(f"start: call {repeat}\n{block}")


def _call_schema(function: dict, key: str) -> dict:
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, key: parameters},
        "required": ["name", key],
        "additionalProperties": False,
        "x-guidance": JSON_LAYOUT,
    }


def parse(form: ToolFormat, text: str) -> tuple[str, list[ToolCall]]:
    """An answer's text before its first call, and its calls (none where it makes none)."""
    if form.style == "hermes":
        found = [_read_call(body, "arguments") for body in _HERMES_CALL.findall(text)]
        head = text.split(CALL_OPEN, 1)[0] if found else text
    else:
        found = [_read_call(text.strip(), "parameters")]
        head = ""
    calls = [call for call in found if call is not None]
    return (head.strip() if calls else text), calls


def _read_call(body: str, key: str) -> ToolCall | None:
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get(key, call.get("arguments", {}))
    return ToolCall(f"call_{uuid.uuid4().hex[:24]}", call["name"], json.dumps(arguments))
