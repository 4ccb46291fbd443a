"""The chat page's structured outputs and tools: its JSON mode, JSON schema and tools boxes
read into the `ChatOptions` fields that `/v1/chat/completions` fills from OpenAI's
`response_format`, `tools` and `tool_choice`, checked by the same request models, and an
answer's tool calls shown as calls (function name and arguments), not as text.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from tunelab.errors import TunelabError
from tunelab.server.chat_request import JsonSchemaFormat, Tool
from tunelab.server.errors import ApiError
from tunelab.server.ui.web import form_text
from tunelab.types import ToolCall

JSON_MODES = ("text", "json_object", "json_schema")
TOOL_CHOICES = ("auto", "required", "none")


def answer_fields(form) -> dict:
    """`response_format`, or `tools` with `tool_choice` and `parallel_tool_calls`, for
    `ChatOptions`, from the form."""
    tools = _tools(form)
    mode = form_text(form, "json_mode", "text")
    if mode not in JSON_MODES:
        raise TunelabError("invalid_form", f"JSON mode {mode!r} is not one of {JSON_MODES}.")
    if tools and mode != "text":
        raise TunelabError(
            "invalid_form",
            "Use either tools or a JSON answer, not both.",
            hint="set JSON mode to text, or empty the tools box",
        )
    if not tools:
        return {"response_format": _response_format(form, mode)}
    choice = form_text(form, "tool_choice", "auto")
    if choice not in TOOL_CHOICES:
        raise TunelabError("invalid_form", f"tool choice {choice!r} is not one of {TOOL_CHOICES}.")
    # An unticked box is not sent: the page's box starts ticked, as OpenAI's default is.
    parallel = bool(form.get("parallel_tool_calls"))
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel}


def _response_format(form, mode: str) -> dict | None:
    if mode == "text":
        return None
    if mode == "json_object":
        return {"type": "json_object"}
    schema = _json(form_text(form, "json_schema", ""), "The JSON schema")
    try:
        checked = JsonSchemaFormat(name="studio", schema=schema)
    except ValidationError as err:
        raise TunelabError("invalid_form", f"The JSON schema: {_first(err)}.") from None
    return {"type": "json_schema", "json_schema": {"schema": checked.schema_}}


def _tools(form) -> tuple[dict, ...]:
    """The tools box: a JSON list of OpenAI's function tools (empty: no tools)."""
    text = form_text(form, "tools")
    if text is None:
        return ()
    listed = _json(text, "The tools")
    if not isinstance(listed, list):
        raise TunelabError(
            "invalid_form",
            "The tools are a JSON list of function tools.",
            hint='[{"type": "function", "function": {"name": "...", "parameters": {...}}}]',
        )
    try:
        tools = [Tool.model_validate(tool) for tool in listed]
        for index, tool in enumerate(tools):
            tool.check_fields(f"tools[{index}]")
    except ValidationError as err:
        raise TunelabError("invalid_form", f"The tools: {_first(err)}.") from None
    except ApiError as err:  # a field tunelab does not honour, named
        raise TunelabError("invalid_form", err.message) from None
    return tuple(tool.model_dump(exclude_none=True) for tool in tools)


def _json(text: str, what: str):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise TunelabError("invalid_form", f"{what} is not JSON: {err}.") from None


def _first(err: ValidationError) -> str:
    """The first problem pydantic found, with where it is."""
    problem = err.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    return f"{where}: {problem['msg']}" if where else problem["msg"]


def shown_calls(calls: tuple[ToolCall, ...]) -> list[dict]:
    """Each call's function name and its arguments, indented when they are JSON."""
    shown = []
    for call in calls:
        try:
            arguments = orjson.dumps(orjson.loads(call.arguments), option=orjson.OPT_INDENT_2)
            text = arguments.decode()
        except orjson.JSONDecodeError:
            text = call.arguments
        shown.append({"name": call.name, "arguments": text})
    return shown
