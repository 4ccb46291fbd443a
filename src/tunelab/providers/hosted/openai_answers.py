"""An OpenAI-style chat completion's choice read as tunelab's records: its token
log-probabilities (`choice.logprobs.content`) and its tool calls (`message.tool_calls`).

The same readers serve the SDK's objects and plain JSON (a server that answered a streamed
request whole), and OpenAI, every OpenAI-compatible server and Together, whose tool calls
have OpenAI's shape. Streamed tool calls arrive in fragments, one call's id and name first
and its arguments in pieces after, each fragment naming the call by its `index`:
`ToolCallParts` puts them together.
"""

from __future__ import annotations

from typing import Any

from tunelab.types import Answer, TokenLogprob, ToolCall, TopLogprob, Usage


def field(item: Any, name: str) -> Any:
    """`item`'s `name`, whether it is an SDK object or a dict read from JSON (None if absent)."""
    if isinstance(item, dict):
        return item.get(name)
    return getattr(item, name, None)


def token_logprobs(logprobs: Any) -> tuple[TokenLogprob, ...] | None:
    """A choice's (or a chunk's) `logprobs` as tunelab's tokens; None when it has none in
    OpenAI's shape (`{"content": [...]}`)."""
    content = field(logprobs, "content") if logprobs is not None else None
    if not isinstance(content, list):
        return None
    return tuple(
        TokenLogprob(*_token(entry), tuple(TopLogprob(*_token(top)) for top in _tops(entry)))
        for entry in content
    )


def _token(entry: Any) -> tuple[str, tuple[int, ...] | None, float]:
    data = field(entry, "bytes")
    return (
        field(entry, "token") or "",
        tuple(data) if data is not None else None,
        float(field(entry, "logprob") or 0.0),
    )


def _tops(entry: Any) -> list:
    return field(entry, "top_logprobs") or []


def tool_calls(message: Any) -> tuple[ToolCall, ...]:
    """A whole answer's tool calls (`message.tool_calls`), in order."""
    calls = field(message, "tool_calls") or []
    return tuple(
        ToolCall(
            field(call, "id") or "",
            field(field(call, "function"), "name") or "",
            field(field(call, "function"), "arguments") or "",
        )
        for call in calls
    )


def whole_answer(body: dict, model: str) -> Answer:
    """A chat completion the server sent as JSON (to a streamed request)."""
    choice = (body.get("choices") or [{}])[0]
    usage = body.get("usage") or {}
    message = choice.get("message") or {}
    return Answer(
        text=message.get("content") or "",
        finish_reason=choice.get("finish_reason") or "stop",
        usage=Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0),
        model=body.get("model") or model,
        logprobs=token_logprobs(choice.get("logprobs")),
        tool_calls=tool_calls(message),
    )


class ToolCallParts:
    """The tool calls of a streamed answer, put together from their fragments."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, fragments: list | None) -> None:
        """Note one delta's `tool_calls` fragments."""
        for fragment in fragments or []:
            call = self._calls.setdefault(
                int(field(fragment, "index") or 0), {"id": "", "name": "", "arguments": []}
            )
            function = field(fragment, "function")
            call["id"] = call["id"] or field(fragment, "id") or ""
            call["name"] = call["name"] or field(function, "name") or ""
            call["arguments"].append(field(function, "arguments") or "")

    def calls(self) -> tuple[ToolCall, ...]:
        """The calls, by their index."""
        return tuple(
            ToolCall(call["id"], call["name"], "".join(call["arguments"]))
            for _, call in sorted(self._calls.items())
        )
