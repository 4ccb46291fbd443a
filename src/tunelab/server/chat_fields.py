"""Which of OpenAI's chat completion request fields `tunelab serve` honours, accepts and
ignores (with the reason), or refuses.

A client written for OpenAI must never get an answer to another question than the one it
asked: a field tunelab does not implement is refused with 400 `unsupported_parameter`
naming it, not dropped. The fields the request model declares are honoured; the ones below
are accepted and ignored because ignoring them changes no answer; a field at its neutral
value (a penalty of 0, `response_format` text) asks for nothing and is accepted too; `null`
is the same as leaving a field out. Everything else is refused, OpenAI's fields that tunelab
does not implement (`functions`, `audio`, ...) and misspellings alike.
"""

from __future__ import annotations

from tunelab.server.errors import ApiError

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


def check_extra_fields(extra: dict) -> None:
    """Refuse the first request field (of those the request model does not declare) that
    is neither ignored nor at its neutral value."""
    for name, value in extra.items():
        if value is None or name in IGNORED:
            continue
        if name in NEUTRAL and value == NEUTRAL[name]:
            continue
        reason = REFUSED.get(name, "tunelab does not implement it")
        raise ApiError(
            400,
            f"Unsupported parameter: `{name}` ({reason}).",
            code="unsupported_parameter",
            param=name,
        )
