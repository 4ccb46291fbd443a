"""A streamed OpenAI-style chat (`chat.completion.chunk` objects) read as a `ChatStream`.

OpenAI, every OpenAI-compatible server and Together stream the same chunks: a text delta
per chunk under `choices[0].delta.content`, the finish reason on the last choice, and the
usage (when the server sends it) on a final chunk without choices. The SDKs read the
server-sent events; this turns their chunks into deltas and one `Answer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable
from typing import Any

from tunelab.errors import TunelabError
from tunelab.providers.base import ChatStream
from tunelab.types import Answer, Usage


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
    answer: dict[str, Any] = {"model": model, "finish": None, "usage": None}
    try:
        for chunk in chunks:
            for text in _read_chunk(chunk, answer):
                parts.append(text)
                yield text
    except TunelabError:
        raise
    except Exception as err:  # whatever the SDK or its transport raised mid-answer
        raise on_error(err) from None
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a client that went away stops the upstream answer too
    usage = answer["usage"]
    tokens = Usage(
        getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0
    )
    return Answer(
        "".join(parts),
        answer["finish"] or "stop",
        tokens,
        time.perf_counter() - began,
        model=answer["model"],
    )


def _read_chunk(chunk: Any, answer: dict) -> list[str]:
    """Note what a chunk says about the answer; its text deltas (of the first choice)."""
    answer["model"] = getattr(chunk, "model", None) or answer["model"]
    if getattr(chunk, "usage", None) is not None:
        answer["usage"] = chunk.usage
    texts = []
    for choice in getattr(chunk, "choices", None) or []:
        if (getattr(choice, "index", 0) or 0) != 0:
            continue  # one choice was asked for
        delta = getattr(choice, "delta", None)
        text = getattr(delta, "content", None) if delta is not None else None
        if text:
            texts.append(text)
        if getattr(choice, "finish_reason", None):
            answer["finish"] = choice.finish_reason
    return texts
