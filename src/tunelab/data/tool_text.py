"""How a conversation with tools is written as text: one place, for training, answering and
counting tokens.

Chat templates that define tool calls get the tools themselves (`apply_chat_template(...,
tools=...)`) and the model writes calls their way:

- `hermes` (Hermes, Qwen 2.5/3): `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`,
  one block a call;
- `llama3` (Llama 3.1+): one bare JSON object `{"name": ..., "parameters": {...}}`.

Templates without tools (the bundled SmolLM2) get tunelab's default: the `hermes` format,
with the tools and the format described in the system prompt (`DEFAULT_INSTRUCTIONS`), the
assistant's earlier calls written as `<tool_call>` blocks and tool results as user turns
wrapped in `<tool_response>`. `render_chat` is the one render of a conversation with its
tools: the engine answers (`generate.encode_chat`) and trains (`dataset`) on it, and
`analyze` counts its tokens (`data.tokens`), so a model is trained on the very text it is
later asked with, and the counts are of that text. It needs only the tokenizer's
`apply_chat_template`; the grammar of a call and the reading of calls back are the
engine's (`engine.tool_format`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Style = Literal["hermes", "llama3"]
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
DEFAULT_INSTRUCTIONS = (
    "You may call functions to answer. The functions, as JSON Schemas:\n{tools}\n"
    "To call one, answer with one block per call:\n"
    '<tool_call>\n{{"name": <function name>, "arguments": <arguments object>}}\n</tool_call>'
)


@dataclass(frozen=True)
class ToolFormat:
    """A template's way with tools: its call `style`, and whether it renders tools itself."""

    style: Style
    native: bool

    @classmethod
    def of(cls, tokenizer) -> ToolFormat:
        template = str(getattr(tokenizer, "chat_template", None) or "")
        if "tools" in template and CALL_OPEN in template:
            return cls("hermes", True)
        if "tools" in template and "<|python_tag|>" in template:
            return cls("llama3", True)
        return cls("hermes", False)

    @property
    def marker(self) -> str:
        """The text an answer's first tool call starts with."""
        return CALL_OPEN if self.style == "hermes" else '{"name"'


def functions(tools: Sequence[dict]) -> list[dict]:
    """The `function` of each of OpenAI's tools (`{"type": "function", "function": {...}}`)."""
    return [tool["function"] for tool in tools if tool.get("type", "function") == "function"]


def uses_tools(messages: Sequence[dict], tools: Sequence[dict] | None) -> bool:
    """Whether a conversation is rendered in a tool format: it declares tools, or has calls
    or tool results."""
    return bool(tools) or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)


def render_chat(
    tokenizer,
    messages: Sequence[dict],
    tools: Sequence[dict] | None = None,
    *,
    add_generation_prompt: bool = False,
) -> str:
    """The conversation's text as the model sees it, calls and results in its template's tool
    format (the template's own, or the default). Template errors propagate to the caller,
    which says what it was rendering."""
    extra: dict = {}
    conversation = list(messages)
    if uses_tools(conversation, tools):
        form = ToolFormat.of(tokenizer)
        conversation = prompt_messages(form, conversation, tools or ())
        if form.native and tools:
            extra["tools"] = list(tools)
    return tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
    )


def prompt_messages(
    form: ToolFormat, messages: Sequence[dict], tools: Sequence[dict]
) -> list[dict]:
    """The conversation as the template takes it: native templates get calls with their
    arguments as objects; others get the default format written into the messages."""
    if form.native:
        return [_native_message(message) for message in messages]
    rendered = [_default_message(message) for message in messages]
    if tools:
        instructions = default_instructions(tools)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {
                "role": "system",
                "content": f"{rendered[0]['content']}\n\n{instructions}",
            }
        else:
            rendered.insert(0, {"role": "system", "content": instructions})
    return rendered


def default_instructions(tools: Sequence[dict]) -> str:
    """The default format's description of `tools`, as the system prompt carries it."""
    described = "\n".join(json.dumps(f, ensure_ascii=False) for f in functions(tools))
    return DEFAULT_INSTRUCTIONS.format(tools=described)


def _native_message(message: dict) -> dict:
    calls = message.get("tool_calls")
    if not calls:
        return message
    native = [
        {"type": "function", "function": {"name": c["name"], "arguments": _object(c["arguments"])}}
        for c in map(_call_fields, calls)
    ]
    return {**message, "content": message.get("content") or "", "tool_calls": native}


def _default_message(message: dict) -> dict:
    if message.get("role") == "tool":
        return {
            "role": "user",
            "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>",
        }
    calls = message.get("tool_calls")
    if not calls:
        return {"role": message["role"], "content": message.get("content") or ""}
    blocks = [write_call(c["name"], c["arguments"]) for c in map(_call_fields, calls)]
    text = "\n".join([*([message["content"]] if message.get("content") else []), *blocks])
    return {"role": message["role"], "content": text}


def _call_fields(call: dict) -> dict:
    """A call from a request message (OpenAI's shape, or already flat) as name and arguments."""
    function = call.get("function", call)
    return {"name": function["name"], "arguments": function.get("arguments") or "{}"}


def _object(arguments: str | dict) -> dict:
    try:
        return json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        return {}


def write_call(name: str, arguments: str | dict) -> str:
    """One call in the default (hermes) format, as a model trained on it writes it."""
    call = {"name": name, "arguments": _object(arguments)}
    return f"{CALL_OPEN}\n{json.dumps(call, ensure_ascii=False)}\n{CALL_CLOSE}"
