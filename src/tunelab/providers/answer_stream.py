"""One answer streamed to a client of `tunelab serve`, whoever produces it.

Every streamed answer, local or hosted, is read by `feed` from the providers' one streaming
shape (`ChatStream`: text deltas, then an `Answer`), one choice after another, in another
thread: the local provider's torch worker for a model with weights here, a relay thread for
a hosted one. `feed` hands events to the event loop, where the server iterates the
`AnswerStream`. Events are `(choice index, text delta)` and, when a choice ends,
`(index, Answer)`; an exception ends the stream with that error.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

from tunelab.providers.base import ChatStream
from tunelab.types import Answer

END = object()  # marks the end of a stream's events


class AnswerStream:
    """Iterate for `(choice index, text delta)` and, when a choice ends, `(index, Answer)`."""

    def __init__(self) -> None:
        self._events: asyncio.Queue = asyncio.Queue()
        self._first = None
        self.cancelled = threading.Event()

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

    async def __aiter__(self) -> AsyncIterator[tuple[int, str | Answer]]:
        event = self._first if self._first is not None else await self._events.get()
        while event is not END:
            if isinstance(event, BaseException):
                raise event
            yield event
            event = await self._events.get()

    def cancel(self) -> None:
        self.cancelled.set()


def feed(
    answer: AnswerStream,
    emit: Callable[[object], None],
    choices: int,
    open_choice: Callable[[int], ChatStream],
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """Stream each choice's deltas through `emit`, then its `Answer` (in the producing
    thread). Stops early when the client went away or `stopped()`; an error ends the stream."""
    try:
        for index in range(choices):
            stream = open_choice(index)
            try:
                for delta in stream:
                    if answer.cancelled.is_set() or stopped():
                        return
                    emit((index, delta))
            finally:
                stream.close()  # a stream left early stops its producer (an HTTP read, say)
            emit((index, stream.result))
    except Exception as err:  # a refusal, a prompt too long, an upstream failure: tell the client
        emit(err)
    finally:
        emit(END)
