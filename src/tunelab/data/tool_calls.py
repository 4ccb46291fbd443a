"""Tool calls in chat data, checked against the tools an example declares.

An example declares its tools as OpenAI does (`"tools": [{"type": "function", "function":
{"name", "description", "parameters"}}]`, or the older `"functions"`); its assistant
messages call them (`tool_calls: [{"id", "type": "function", "function": {"name",
"arguments"}}]`, the arguments a JSON text) and `tool` messages answer a call by its
`tool_call_id`. `check_tool_use` finds the calls that would teach a model to call what it
cannot: a tool not declared, arguments that are not a JSON object valid against the tool's
parameters schema (`json_schema`), a result that answers no earlier call. The evaluation of
tool calls grades a model's calls with the same `call_problem`.
"""

from __future__ import annotations

import json

from tunelab.data.json_schema import schema_problem


def declared_functions(record: dict) -> dict[str, dict] | None:
    """The functions an example declares, by name; None where its `tools` (or `functions`)
    are not a list of function definitions."""
    tools, functions = record.get("tools"), record.get("functions")
    if tools is not None and not isinstance(tools, list):
        return None
    if functions is not None and not isinstance(functions, list):
        return None
    declared = {}
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            return None
        declared_function = tool.get("function")
        if not isinstance(declared_function, dict) or not isinstance(
            declared_function.get("name"), str
        ):
            return None
        declared[declared_function["name"]] = declared_function
    for function in functions or []:
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return None
        declared[function["name"]] = function
    return declared


def read_arguments(arguments: object) -> tuple[dict | None, str | None]:
    """A call's arguments as an object (OpenAI writes them as JSON text), or why not."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as err:
            return None, f"arguments are not valid JSON ({err.msg})"
    if not isinstance(arguments, dict):
        return None, "arguments are not a JSON object"
    return arguments, None


def call_problem(name: object, arguments: object, declared: dict[str, dict]) -> tuple[str, str]:
    """("unknown_tool" or "invalid_tool_arguments", why) for a bad call; ("", "") for a good
    one."""
    if name not in declared:
        known = ", ".join(sorted(declared)) or "none is declared"
        return "unknown_tool", f"calls {name!r}, which is not a declared tool ({known})"
    values, problem = read_arguments(arguments)
    if problem is None:
        problem = schema_problem(values, declared[str(name)].get("parameters"))
    return ("invalid_tool_arguments", f"{name}: {problem}") if problem else ("", "")


def check_tool_use(record: dict) -> list[tuple[str, str]]:
    """Every defect of an example's tools, calls and tool results, as (code, message)."""
    messages = [m for m in record.get("messages") or [] if isinstance(m, dict)]
    uses = any(m.get("tool_calls") for m in messages) or any(
        m.get("role") == "tool" for m in messages
    )
    if not uses and "tools" not in record:
        return []
    declared = declared_functions(record)
    if declared is None:
        return [("invalid_tools", '"tools" must be a list of function definitions with names')]
    problems, call_ids = [], set()
    for index, message in enumerate(messages, 1):
        if message.get("role") == "tool":
            problems.extend(_result_problems(message, index, call_ids))
        for call in message.get("tool_calls") or []:
            problems.extend(_call_problems(call, index, declared, call_ids))
    return problems


def _call_problems(call: object, index: int, declared: dict, call_ids: set) -> list:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        return []  # `invalid_tool_calls` says what is wrong with its shape
    if isinstance(call, dict) and isinstance(call.get("id"), str):
        call_ids.add(call["id"])
    code, problem = call_problem(function.get("name"), function.get("arguments"), declared)
    return [(code, f"message {index} {problem}")] if code else []


def _result_problems(message: dict, index: int, call_ids: set) -> list:
    call_id = message.get("tool_call_id")
    if call_id in call_ids:
        return []
    said = "has no tool_call_id" if call_id is None else f"answers {call_id!r}"
    text = f"message {index} is a tool result that {said}, which no earlier call has as its id"
    return [("unmatched_tool_result", text)]
