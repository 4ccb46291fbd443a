"""A streamed OpenAI-style chat (`chat.completion.chunk` objects) read as a `ChatStream`.

OpenAI, every OpenAI-compatible server and Together stream the same chunks: a text delta
per chunk under `choices[0].delta.content`, the finish reason on the last choice, and the
usage (when the server sends it) on a final chunk without choices. Where asked for, a chunk
carries its tokens' log-probabilities (`choices[0].logprobs.content`) and fragments of the
tool calls (`delta.tool_calls`, put together by their index). The SDKs read the server-sent
events; this turns their chunks into deltas (`TextDelta`s, with their tokens'
log-probabilities) and one `Answer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

from tunelab.errors import TunelabError
from tunelab.providers.base import ChatStream
from tunelab.providers.hosted.openai_answers import ToolCallParts, token_logprobs
from tunelab.types import Answer, TextDelta, TokenLogprob, Usage


def chunk_stream(
    chunks: Iterable[Any], model: str, on_error: Callable[[Exception], TunelabError]
) -> ChatStream:
    """The chunks of an answer already requested, as a `ChatStream`.

    An error while reading (the server's error event, a connection broken off) becomes
    `on_error(err)`, the provider's own mapping, which never holds the key.
    """
    return ChatStream(_deltas(chunks, model, on_error, time.perf_counter()))


def _deltas(chunks, model, on_error, began: float) -> Generator[str, None, Answer]:
    parts: list[str] = []
    answer = _Streamed(model)
    try:
        for chunk in chunks:
            for delta in answer.read(chunk):
                parts.append(delta)
                yield delta
    except TunelabError:
        raise
    except Exception as err:  # whatever the SDK or its transport raised mid-answer
        raise on_error(err) from None
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a client that went away stops the upstream answer too
    return answer.result("".join(parts), time.perf_counter() - began)


class _Streamed:
    """What a stream's chunks have said so far about the answer besides its text."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.finish: str | None = None
        self.usage: Any = None
        self.logprobs: list[TokenLogprob] | None = None  # None until a chunk carries some
        self.tool_calls = ToolCallParts()

    def read(self, chunk: Any) -> list[TextDelta]:
        """Note what a chunk says about the answer; its text deltas (of the first choice)."""
        self.model = getattr(chunk, "model", None) or self.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        deltas = []
        for choice in getattr(chunk, "choices", None) or []:
            if (getattr(choice, "index", 0) or 0) != 0:
                continue  # one choice was asked for
            delta = getattr(choice, "delta", None)
            self.tool_calls.add(getattr(delta, "tool_calls", None))
            tokens = token_logprobs(getattr(choice, "logprobs", None))
            if tokens is not None:
                self.logprobs = [*(self.logprobs or ()), *tokens]
            text = getattr(delta, "content", None) or ""
            if text or tokens:
                deltas.append(TextDelta(text, tokens))
            if getattr(choice, "finish_reason", None):
                self.finish = choice.finish_reason
        return deltas

    def result(self, text: str, latency: float) -> Answer:
        tokens = Usage(
            getattr(self.usage, "prompt_tokens", 0) or 0,
            getattr(self.usage, "completion_tokens", 0) or 0,
        )
        return Answer(
            text,
            self.finish or "stop",
            tokens,
            latency,
            model=self.model,
            logprobs=tuple(self.logprobs) if self.logprobs is not None else None,
            tool_calls=self.tool_calls.calls(),
        )
