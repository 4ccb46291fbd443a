"""The local provider's generation queue: the one thread that runs a server's torch work,
and the queue in front of it, used from the server's event loop.

Requests are batched continuously (iteration-level): the worker keeps one decode session
(`DecodeSession`) for a model's weights, and between two decoding steps every waiting request
for those weights joins it, streamed or not, whatever its sampling settings, logit bias or
grammar (each request samples with its own settings and generator). The requests that join
at one step boundary are prefilled together, in one forward pass from the cache of the tokens
they all start with (the system prompt). The LoRA fine-tunes of one base count as one model
there, each row answered by its own adapter over the one copy of the base (`ModelHost`). A
row leaves the batch as soon as it is done: a request's answer is returned, or its stream
ended, at once, not when the batch's longest row ends. Streamed deltas go to the event loop
through the request's `AnswerStream` as each step makes them; the choices of a streamed
request run one after another, as the local provider streams them.
Label scoring requests (`labels` in a request: classification without generation) run
between steps. A request for other weights waits until the running session drains, and
requests for the running weights that arrived after it wait behind it: oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol, cast

from tunelab import cores
from tunelab.engine.generate import (
    DecodeGroup,
    DecodeSession,
    Sampling,
    StreamCursor,
    encode_chat,
)
from tunelab.engine.score import score_answers
from tunelab.errors import TunelabError
from tunelab.providers.answer_stream import END, AnswerStream
from tunelab.providers.local.answering import NO_STRUCTURE, Structure, streamed_answer
from tunelab.providers.local.model_cache import LoadedModel, ModelHost


@dataclass(eq=False)
class BatchRequest:
    """A request answered whole, possibly in one batch with others."""

    loaded: LoadedModel
    messages: list[dict]
    sampling: Sampling
    n: int
    done: asyncio.Future
    arrived: float
    structure: Structure = NO_STRUCTURE  # tools shown to the model, calls read back


@dataclass(eq=False)
class StreamRequest:
    """A request whose deltas go to `answer` as they are generated."""

    loaded: LoadedModel
    messages: list[dict]
    sampling: Sampling
    n: int
    answer: AnswerStream
    release: Callable[[], None]  # called once the worker is done with it
    arrived: float
    structure: Structure = NO_STRUCTURE


@dataclass(eq=False)
class ScoreRequest:
    """A request answered by the log-likelihood of each of `answers` after its messages."""

    loaded: LoadedModel
    messages: list[dict]
    answers: list[str]
    done: asyncio.Future  # gets (the answers' scores in their order, the prompt's tokens)
    arrived: float
    n: int = 1


Request = BatchRequest | StreamRequest | ScoreRequest


class GenerationQueue:
    """Runs requests in the worker thread; used from the server's event loop."""

    def __init__(self, max_batch_size: int = 8, batch_window_seconds: float = 0.005) -> None:
        self.max_batch_size = max(1, max_batch_size)
        self.batch_window_seconds = batch_window_seconds
        self._waiting: list[Request] = []  # oldest first; guarded by `_lock`
        self._lock = threading.Lock()
        self._working = False  # whether the worker loop runs (guarded by `_lock`)
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="tunelab-generate")

    def submit(self, request: Request) -> None:
        """Queue `request`: a batch request's `done` gets its completions (or its error)."""
        self._loop = asyncio.get_running_loop()
        with self._lock:
            self._waiting.append(request)
            start, self._working = not self._working, True
        if start:
            self._loop.run_in_executor(self._worker, self._work, self._loop)

    def close(self) -> None:
        """Stop: requests still waiting are answered 503, streams stop at their next delta."""
        self._closed = True
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if self._loop is not None:
            for request in waiting:
                _refuse(request, shutting_down(), self._loop)
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """The worker's loop: score, admit, step, until nothing waits or runs; the process
        counts as computing meanwhile (its share of the cores, see tunelab.cores)."""
        running: _Running | None = None
        try:
            with cores.computing() as share:
                while not self._closed:
                    share.rebalance()  # others may have started computing since
                    for request in self._take_scores():
                        _answer_scores(request, self.max_batch_size, loop)
                    if running is None or not running.session.rows:
                        running = self._next_session(loop)
                        if running is None:
                            if self._stop_when_idle():
                                return
                            continue
                    running.admit(self._take_for(running))
                    if running.session.rows:
                        running.step()
        finally:
            if running is not None:
                running.fail(shutting_down())

    def _stop_when_idle(self) -> bool:
        """Whether nothing waits; then the worker stops and the next `submit` starts it."""
        with self._lock:
            if self._waiting:
                return False
            self._working = False
            return True

    def _next_session(self, loop: asyncio.AbstractEventLoop) -> _Running | None:
        """A session for the oldest waiting request's weights, started once its batching
        window has passed (None when only scoring requests, or none, wait)."""
        with self._lock:
            oldest = next((r for r in self._waiting if not isinstance(r, ScoreRequest)), None)
        if oldest is None:
            return None
        # Requests that arrive together start together (the loop's clock is monotonic).
        time.sleep(max(0.0, oldest.arrived + self.batch_window_seconds - time.monotonic()))
        return _Running(oldest.loaded, loop)

    def _take_scores(self) -> list[ScoreRequest]:
        with self._lock:
            scores = [r for r in self._waiting if isinstance(r, ScoreRequest)]
            self._waiting = [r for r in self._waiting if not isinstance(r, ScoreRequest)]
        return scores

    def _take_for(self, running: _Running) -> list[BatchRequest | StreamRequest]:
        """The waiting requests that join `running` now: for its weights, in arrival order,
        up to the batch's size, none past an older request for other weights."""
        if not running.session.joinable():
            return []
        taken: list[BatchRequest | StreamRequest] = []
        rows = running.session.rows
        with self._lock:
            for request in list(self._waiting):
                if isinstance(request, ScoreRequest):
                    continue
                if request.loaded.host is not running.host:
                    break
                size = 1 if isinstance(request, StreamRequest) else request.n
                if rows and rows + size > self.max_batch_size:
                    break
                self._waiting.remove(request)
                taken.append(request)
                rows += size
        return taken


class _Member(Protocol):
    """A request's part in a session: it adds its rows and hears how they went."""

    @property
    def request(self) -> BatchRequest | StreamRequest: ...

    def abandoned(self) -> bool: ...  # its client went away

    def stepped(self, group: DecodeGroup) -> None: ...  # its rows got a token each

    def failed(self, error: Exception) -> None: ...


def _member(group: DecodeGroup) -> _Member:
    """The request part that added `group` to a session (its owner)."""
    return cast(_Member, group.owner)


class _Running:
    """The decode session of one model's weights and the requests decoding in it."""

    def __init__(self, loaded: LoadedModel, loop: asyncio.AbstractEventLoop) -> None:
        self.host: ModelHost = loaded.host
        self.tokenizer = loaded.tokenizer
        self.session = DecodeSession(self.host.model, self.tokenizer)
        self.loop = loop

    def admit(self, requests: list[BatchRequest | StreamRequest]) -> None:
        for request in requests:
            if isinstance(request, StreamRequest):
                _Streamed(request, self).next_choice()
            elif not request.done.done():  # its client is still there
                _Whole(request, self).start()

    def add(self, member: _Member, sampling: Sampling, rows: int) -> None:
        """Join `rows` rows of `member`'s prompt to the session (holding the host)."""
        request = member.request
        prompt = encode_chat(self.tokenizer, request.messages, request.structure.tools)
        with self.host.lock:
            adapters = self.host.adapter_names([request.loaded] * rows)
            self._refresh()
            self.session.add(
                [prompt] * rows,
                sampling,
                biases=[dict(sampling.logit_bias)] * rows,
                constraints=[sampling.constraint] * rows,
                adapters=adapters,
                owner=member,
            )

    def step(self) -> None:
        """One token for every row; deltas and finished answers go to their clients."""
        for group in list(self.session.groups):
            if _member(group).abandoned():
                self.session.drop(group)
        if not self.session.rows:
            return
        try:
            with self.host.lock:
                self._refresh()
                stepped = self.session.step()
        except Exception as err:  # a bug: fail what runs rather than leave its clients hanging
            self.fail(err)
            return
        for group in stepped:
            _member(group).stepped(group)

    def fail(self, error: Exception) -> None:
        """End every request in the session with `error`."""
        for group in list(self.session.groups):
            self.session.drop(group)
            _member(group).failed(error)

    def deliver(self, call: Callable[[], None]) -> None:
        """Run `call` on the event loop (dropped once the loop has closed)."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            self.loop.call_soon_threadsafe(call)

    def _refresh(self) -> None:
        """The host's model and each active row's adapter name for the next step: the base
        may have been wrapped by peft, or an adapter evicted, since the last one."""
        owners = [_member(g).request.loaded for g in self.session.groups for _ in g.active]
        self.session.use(self.host.model, self.host.adapter_names(owners) if owners else None)


@dataclass(eq=False)
class _Whole:
    """A request answered whole: its `n` choices are rows of one group (one generator)."""

    request: BatchRequest
    running: _Running

    def start(self) -> None:
        try:
            self.running.add(self, self.request.sampling, self.request.n)
        except Exception as err:  # a prompt over the context, a bad bias: this request only
            self.failed(err)

    def abandoned(self) -> bool:
        return self.request.done.done()

    def stepped(self, group: DecodeGroup) -> None:
        if group.done:
            structure, tokenizer = self.request.structure, self.running.tokenizer
            answers = [structure.finish(tokenizer, row.completion()) for row in group.rows]
            self.running.deliver(partial(_resolve, self.request.done, answers))

    def failed(self, error: Exception) -> None:
        self.running.deliver(partial(_resolve, self.request.done, error))


@dataclass(eq=False)
class _Streamed:
    """A streamed request: one choice at a time, each a group with its own seed."""

    request: StreamRequest
    running: _Running
    index: int = -1
    cursor: StreamCursor = field(default_factory=lambda: StreamCursor(()))
    began: float = 0.0

    def __post_init__(self) -> None:
        self.emit = self.request.answer.emitter(self.running.loop)

    def next_choice(self) -> None:
        """Start the next choice, or end the stream after the last."""
        self.index += 1
        if self.index == self.request.n:
            self._end()
            return
        sampling = self.request.sampling
        # Each choice of a seeded request gets its own seed, or all would be the same.
        seed = None if sampling.seed is None else sampling.seed + self.index
        self.cursor, self.began = StreamCursor(sampling.stop), time.perf_counter()
        try:
            self.running.add(self, replace(sampling, seed=seed), 1)
        except Exception as err:
            self.failed(err)

    def abandoned(self) -> bool:
        if not self.request.answer.cancelled.is_set():
            return False
        self._end()
        return True

    def stepped(self, group: DecodeGroup) -> None:
        row, structure = group.rows[0], self.request.structure
        delta = self.cursor.delta(row)
        if delta is not None and not structure.reads_calls:  # a call's text is held back
            self.emit((self.index, delta))
        if not group.done:
            return
        seconds = time.perf_counter() - self.began
        answer = streamed_answer(self.request.loaded, structure, row.completion(), seconds)
        if structure.reads_calls and answer.text:
            self.emit((self.index, answer.text))
        self.emit((self.index, answer))
        self.next_choice()

    def failed(self, error: Exception) -> None:
        self.emit(error)
        self._end()

    def _end(self) -> None:
        self.emit(END)
        self.running.deliver(self.request.release)


def _resolve(future: asyncio.Future, outcome: object) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _refuse(request: Request, error: Exception, loop: asyncio.AbstractEventLoop) -> None:
    """End a request that never ran with `error` (on the event loop)."""
    if isinstance(request, StreamRequest):
        emit = request.answer.emitter(loop)
        emit(error)
        emit(END)
        request.release()
    else:
        _resolve(request.done, error)


def _answer_scores(request: ScoreRequest, batch_size: int, loop: asyncio.AbstractEventLoop) -> None:
    if not request.done.done():
        outcome = _score(request, batch_size)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            loop.call_soon_threadsafe(_resolve, request.done, outcome)


def _score(request: ScoreRequest, batch_size: int) -> object:
    """The request's answer scores and prompt length, or the exception it failed with."""
    try:
        tokenizer = request.loaded.tokenizer
        with request.loaded.running() as (model, adapter):
            [scores] = score_answers(
                model,
                tokenizer,
                [request.messages],
                request.answers,
                batch_size=batch_size,
                adapter=adapter,
            )
        return scores, len(encode_chat(tokenizer, request.messages))
    except Exception as err:
        return err


def shutting_down() -> TunelabError:
    """What requests still waiting get when the server stops (503 in OpenAI's envelope)."""
    return TunelabError("server_shutting_down", "The server is shutting down.")
