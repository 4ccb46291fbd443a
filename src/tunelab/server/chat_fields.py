"""Which of OpenAI's chat completion request fields `tunelab serve` honours, accepts and
ignores (with the reason), or refuses, at the top of the request and in its nested objects
(messages, content parts, tool calls, tools, response formats, stream options).

A client written for OpenAI must never get an answer to another question than the one it
asked: a field tunelab does not implement is refused with 400 `unsupported_parameter`
naming it by its whole path (`messages[2].content[0].image_url`), not dropped. The fields the
request models declare are honoured; the ones below are accepted and ignored because
ignoring them changes no answer; a field at its neutral value (a penalty of 0, `response_format`
text) asks for nothing and is accepted too; `null` is the same as leaving a field out.
Everything else is refused, OpenAI's fields that tunelab does not implement (`functions`,
`audio`, ...) and misspellings alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tunelab.server.errors import unsupported_parameter

# Accepted and ignored: each with why ignoring it changes no answer.
IGNORED = {
    "user": "an end-user id for OpenAI's abuse monitoring; tunelab monitors no one",
    "safety_identifier": "the newer name of `user`",
    "metadata": "tags for OpenAI's stored completions; tunelab stores no completion",
    "store": "asks OpenAI to store the completion; tunelab stores none",
    "prompt_cache_key": "a routing hint for OpenAI's prompt cache; tunelab's prefix cache "
    "needs none",
    "prompt_cache_retention": "how long OpenAI keeps a cached prompt; tunelab keeps none "
    "between requests",
    "service_tier": "OpenAI's processing tiers; tunelab has one",
}
# Accepted at the value that asks for nothing (what OpenAI does when they are left out).
NEUTRAL = {
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "modalities": ["text"],
}
# Why some refused fields are refused, where more can be said than "not implemented".
REFUSED = {
    "functions": "the deprecated function calls are not implemented; use `tools`",
    "function_call": "the deprecated function calls are not implemented; use `tool_choice`",
    "frequency_penalty": "penalties are not implemented; only 0 is accepted",
    "presence_penalty": "penalties are not implemented; only 0 is accepted",
    "audio": "tunelab's models answer in text only",
    "modalities": "tunelab's models answer in text only",
}


@dataclass(frozen=True)
class ExtraFields:
    """What becomes of the fields of one kind of request object that its model does not
    declare: ignored (name → why), accepted at a neutral value only, or refused (name →
    why, where more can be said than "not implemented")."""

    ignored: Mapping[str, str] = field(default_factory=dict)
    neutral: Mapping[str, object] = field(default_factory=dict)
    refused: Mapping[str, str] = field(default_factory=dict)


REQUEST = ExtraFields(IGNORED, NEUTRAL, REFUSED)
# Objects whose model declares every field OpenAI defines for them (tool calls, tools,
# response formats, tool choices): any other field is refused.
DECLARED_ONLY = ExtraFields()
MESSAGE = ExtraFields(
    refused={
        "audio": "an earlier audio answer; tunelab's models answer in text only",
        "function_call": "the deprecated function calls are not implemented; use `tool_calls`",
    }
)
TEXT_PART = ExtraFields(
    ignored={
        "prompt_cache_breakpoint": "marks the end of a prefix for OpenAI's prompt cache; "
        "tunelab's prefix cache needs no mark",
    }
)
STREAM_OPTIONS = ExtraFields(
    neutral={"include_obfuscation": False},
    refused={
        "include_obfuscation": "tunelab's streams carry no obfuscation padding; "
        "only false is accepted",
    },
)
# Content parts tunelab's models cannot read: refused by name, never dropped.
UNREADABLE_PARTS = {
    "image_url": "tunelab's models read text only",
    "input_audio": "tunelab's models read text only",
    "file": "tunelab's models read text only; put the file's text in a text part",
}
CUSTOM_TOOLS = "custom tools (free-form input) are not implemented; use a function tool"
ALLOWED_TOOLS = "narrowing the tools per request is not implemented; send only those tools"
FUNCTION_MESSAGES = "the deprecated function messages are not implemented; use `tool` messages"
# The content part types each role's messages may carry (as OpenAI defines them).
PART_TYPES_BY_ROLE = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}
# Message fields that only some roles' messages carry (as OpenAI defines them).
ROLES_BY_MESSAGE_FIELD = {
    "name": ("system", "developer", "user", "assistant"),
    "refusal": ("assistant",),
    "tool_calls": ("assistant",),
    "tool_call_id": ("tool",),
}


def check_extra_fields(extra: dict, fields: ExtraFields = REQUEST, at: str = "") -> None:
    """Refuse the first of an object's undeclared fields (`extra`) that is neither ignored
    nor at its neutral value; `at` is the object's path in the request."""
    for name, value in extra.items():
        if value is None or name in fields.ignored:
            continue
        if name in fields.neutral and value == fields.neutral[name]:
            continue
        refuse(path_to(at, name), fields.refused.get(name, "tunelab does not implement it"))


def refuse(param: str, reason: str) -> None:
    """Refuse the request for the field at `param`, saying why."""
    raise unsupported_parameter(param, reason)


def path_to(at: str, name: str) -> str:
    """The path of field `name` of the object at `at` (the request itself when empty)."""
    return f"{at}.{name}" if at else name
