"""Anthropic's Claude models as a chat-only provider, through the official `anthropic` SDK.

OpenAI-style messages map onto Anthropic's Messages API: system messages become the `system`
parameter, `stop` becomes `stop_sequences`, and `max_tokens` (which Anthropic requires) is
the caller's or `DEFAULT_MAX_TOKENS`; sampling settings are not sent (the API takes none).
`tools`, `tool_choice` and `parallel_tool_calls` become Anthropic's tool use, and its
`tool_use` blocks the answer's tool calls (`anthropic_tools`). `logprobs` and `logit_bias`
are refused by name (the API gives no token log-probabilities and takes no bias), and so is a
JSON `response_format`: the Messages API has no such setting.
The SDK's own retries are off (`max_retries=0`) so that `tunelab.providers.hosted.retry` applies:
429, 5xx and Anthropic's "overloaded" 529 are retried, honouring `Retry-After`; any other
error is a `TunelabError` that never holds the key.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import TunelabError
from tunelab.lazy import LazyModule
from tunelab.providers.base import ChatStream
from tunelab.providers.hosted.anthropic_tools import ToolUseParts, tool_call, tool_settings, turns
from tunelab.providers.hosted.service import HostedProvider
from tunelab.providers.provider import CHAT, ModelEntry
from tunelab.types import Answer, Usage

PROVIDER = "Anthropic"
KEY_VARIABLE = "ANTHROPIC_API_KEY"
anthropic = LazyModule("anthropic")  # the SDK loads when a call needs it
OFFICIAL_HOST = "api.anthropic.com"
DEFAULT_MAX_TOKENS = 1024
# Anthropic's words for why an answer ended, in OpenAI's.
FINISH_REASONS = {
    "max_tokens": "length",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
}
# Models to offer in `tunelab models list`, each answered by its bare name as listed (any
# other id works as `anthropic/<id>`).
MODELS = ("claude-sonnet-4-20250514", "claude-opus-4-20250514", "claude-3-5-haiku-20241022")


def register_providers(register) -> None:
    register(AnthropicProvider)


class AnthropicProvider(HostedProvider):
    """Chat with Claude models (Anthropic trains no models for its customers)."""

    name = "anthropic"
    title = "Anthropic"
    capabilities = frozenset({CHAT})
    key_variable = KEY_VARIABLE
    official_hosts = (OFFICIAL_HOST,)
    base_url_variable = "ANTHROPIC_BASE_URL"  # the SDK would send ANTHROPIC_API_KEY there
    answer_fields = frozenset({"tools"})

    def _new_client(self, api_key: str, base_url: str | None) -> Any:
        return anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0)

    def _sdk_error(self) -> type[Exception]:
        return anthropic.AnthropicError

    @classmethod
    def models(cls) -> list[ModelEntry]:
        return [ModelEntry(model, cls.name) for model in MODELS]

    def chat(self, model: str, messages: list[dict], **options) -> Answer:
        began = time.perf_counter()
        request = _request(model, messages, self._answer_settings(options))
        message = self._call(lambda: self._client.messages.create(**request))
        if message.content is None or message.usage is None:  # not the Messages API answering
            where = self._client.base_url
            raise TunelabError("provider_bad_response", f"{PROVIDER} ({where}) sent no message.")
        text = "".join(block.text for block in message.content if block.type == "text")
        usage = message.usage
        return Answer(
            text,
            _finish(message.stop_reason),
            Usage(usage.input_tokens, usage.output_tokens),
            time.perf_counter() - began,
            model=message.model or model,
            tool_calls=tuple(tool_call(b) for b in message.content if b.type == "tool_use"),
        )

    def stream_chat(self, model: str, messages: list[dict], **options) -> ChatStream:
        began = time.perf_counter()
        request = _request(model, messages, self._answer_settings(options))
        # The request is made here, so a refusal (or a 529 retried) comes before any delta.
        events = self._call(lambda: self._client.messages.create(**request, stream=True))
        return ChatStream(self._deltas(events, model, began))

    def _deltas(self, events, model: str, began: float) -> Generator[str, None, Answer]:
        parts, answer = [], _Streamed(model)
        try:
            for event in events:
                delta = _read_event(event, answer)
                if delta:
                    parts.append(delta)
                    yield delta
        except TunelabError as err:  # an error event: its message may quote what was sent
            raise self._scrub(err) from None
        except Exception as err:  # the SDK's error event, or the connection broken off
            raise self._stream_error(err) from None
        finally:
            events.close()
        return Answer(
            "".join(parts),
            _finish(answer.stop),
            Usage(answer.input_tokens, answer.output_tokens),
            time.perf_counter() - began,
            model=answer.model,
            tool_calls=answer.tool_uses.calls(),
        )


def _request(model: str, messages: list[dict], settings: dict) -> dict:
    """OpenAI-style chat settings (`answer_settings`) as a Messages API request.

    The Messages API of current SDKs takes no sampling settings (temperature, top_p) and has
    never taken a seed: the model samples as Anthropic configures it, so these are not sent.
    """
    system = "\n\n".join(str(m["content"]) for m in messages if m["role"] == "system")
    request: dict[str, Any] = {
        "model": model,
        "messages": turns(messages),
        "max_tokens": settings.get("max_tokens") or DEFAULT_MAX_TOKENS,
        **tool_settings(settings),
    }
    stop = settings.get("stop")
    optional = {"system": system or None, "stop_sequences": list(stop) if stop else None}
    request.update({name: value for name, value in optional.items() if value is not None})
    return request


@dataclass
class _Streamed:
    """What a stream's events have said so far about the answer besides its text."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    stop: str | None = None
    tool_uses: ToolUseParts = field(default_factory=ToolUseParts)


def _read_event(event: Any, answer: _Streamed) -> str | None:
    """Note what a stream event says about the answer; its text delta, if it carries one."""
    if event.type == "message_start":
        answer.model = event.message.model or answer.model
        answer.input_tokens = event.message.usage.input_tokens or 0
    elif event.type == "content_block_start" and event.content_block.type == "tool_use":
        answer.tool_uses.start(event.index, event.content_block)
    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
        return event.delta.text
    elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
        answer.tool_uses.add(event.index, event.delta.partial_json)
    elif event.type == "message_delta":
        answer.stop = event.delta.stop_reason
        answer.output_tokens = event.usage.output_tokens or answer.output_tokens
    elif event.type == "error":
        raise TunelabError("provider_unavailable", f"{PROVIDER}: {event.error.message}")
    return None


def _finish(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")
