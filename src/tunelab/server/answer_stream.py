"""One answer streamed to a client, whoever produces it.

The producer (the torch worker for a local model, a thread reading a hosted provider's
stream) runs in another thread and hands events to the event loop through `emitter`; the
route iterates the stream there. Events are `(choice index, text delta)` and, when a choice
ends, `(index, Completion)`; an exception ends the stream with that error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

from tunelab.engine.generate import Completion

END = object()  # marks the end of a stream's events


class AnswerStream:
    """Iterate for `(choice index, text delta)` and, when a choice ends, `(index, Completion)`."""

    def __init__(self) -> None:
        self._events: asyncio.Queue = asyncio.Queue()
        self._first = None
        self.cancelled = threading.Event()

    @classmethod
    def of(cls, choices: list[Completion]) -> AnswerStream:
        """A whole answer as one delta per choice."""
        stream = cls()
        for index, choice in enumerate(choices):
            stream._events.put_nowait((index, choice.text))
            stream._events.put_nowait((index, choice))
        stream._events.put_nowait(END)
        return stream

    def emitter(self, loop: asyncio.AbstractEventLoop) -> Callable[[object], None]:
        """A function that hands one event to this stream from another thread."""

        def emit(event: object) -> None:
            try:
                loop.call_soon_threadsafe(self._events.put_nowait, event)
            except RuntimeError:  # the event loop has closed: nobody is listening
                self.cancel()

        return emit

    async def started(self) -> None:
        """Wait for the first event, so that an error comes before any response is sent."""
        self._first = await self._events.get()
        if isinstance(self._first, BaseException):
            raise self._first

    async def __aiter__(self) -> AsyncIterator[tuple[int, str | Completion]]:
        event = self._first if self._first is not None else await self._events.get()
        while event is not END:
            if isinstance(event, BaseException):
                raise event
            yield event
            event = await self._events.get()

    def cancel(self) -> None:
        self.cancelled.set()
