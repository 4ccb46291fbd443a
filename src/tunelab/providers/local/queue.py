"""The local provider's generation queue: the one thread that runs a server's torch work,
and the queue in front of it, used from the server's event loop.

Non-streaming requests for the same model and sampling settings that arrive together (or
while the worker is busy) are answered by one call to the engine's batched `generate`; the
LoRA fine-tunes of one base count as one model there, each row answered by its own adapter
over the one copy of the base (`ModelHost`);
streamed requests run there one at a time, streamed as the local provider streams
(`engine_stream`) and fed to the event loop by the same `feed` as hosted answers; label
scoring requests (`labels` in a request: classification without generation) run there one at
a time too. Groups run oldest first.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from functools import partial

from tunelab.engine.generate import Sampling, encode_chat, generate
from tunelab.engine.score import score_answers
from tunelab.errors import TunelabError
from tunelab.providers.answer_stream import AnswerStream, feed
from tunelab.providers.base import ChatStream
from tunelab.providers.local.answering import NO_STRUCTURE, Structure, engine_stream
from tunelab.providers.local.model_cache import LoadedModel

# After a batch of several rows, how long the next group may wait for those clients to return.
REFILL_SECONDS = 0.03


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


class GenerationQueue:
    """Runs requests in the worker thread; used from the server's event loop."""

    def __init__(self, max_batch_size: int = 8, batch_window_seconds: float = 0.005) -> None:
        self.max_batch_size = max(1, max_batch_size)
        self.batch_window_seconds = batch_window_seconds
        self._waiting: OrderedDict[object, list] = OrderedDict()  # batch key → requests
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None
        self._closed = False
        # Rows of the last batch and when it finished: clients it answered come back together.
        self._last_rows, self._free_since = 1, 0.0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="tunelab-generate")

    def submit(self, request: BatchRequest | StreamRequest | ScoreRequest) -> None:
        """Queue `request`: a batch request's `done` gets its completions (or its error)."""
        key = _batch_key(request) if isinstance(request, BatchRequest) else request
        self._waiting.setdefault(key, []).append(request)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        self._wakeup.set()

    def close(self) -> None:
        """Stop: requests still waiting are answered 503, streams stop at their next delta."""
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for item in itertools.chain.from_iterable(self._waiting.values()):
            if isinstance(item, (BatchRequest, ScoreRequest)) and not item.done.done():
                item.done.set_exception(shutting_down())
        self._waiting.clear()
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def _dispatch(self) -> None:
        """Run the oldest group next; requests arriving meanwhile gather into groups."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key, group = next(iter(self._waiting.items()))
            if isinstance(group[0], BatchRequest):
                await self._gather(group)
            batch = self._take(key)
            if isinstance(key, StreamRequest):
                try:
                    await loop.run_in_executor(self._worker, self._stream_in_worker, key, loop)
                finally:
                    key.release()
            elif batch:
                work = _score if isinstance(key, ScoreRequest) else _generate_batch
                try:
                    outcomes = await loop.run_in_executor(
                        self._worker, work, batch, self.max_batch_size
                    )
                except asyncio.CancelledError:  # closing: answer them rather than leave them
                    _settle(batch, [shutting_down() for _ in batch])
                    raise
                _settle(batch, outcomes)
                self._last_rows, self._free_since = _rows(batch), loop.time()

    async def _gather(self, group: list) -> None:
        """Let a group fill before it runs.

        Every group waits `batch_window_seconds` after its first request. After a batch of
        several rows, a group smaller than it also waits (up to REFILL_SECONDS after the
        worker came free) for the clients just answered to send their next requests:
        otherwise concurrent clients split into half-size batches that alternate.
        """
        now = asyncio.get_running_loop().time
        target = min(self.max_batch_size, self._last_rows)
        deadline = group[0].arrived + self.batch_window_seconds
        if self._last_rows > 1 and _rows(group) < target:
            deadline = max(deadline, self._free_since + REFILL_SECONDS)
        while _rows(group) < self.max_batch_size and (delay := deadline - now()) > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except asyncio.TimeoutError:
                return
            if self._last_rows > 1 and _rows(group) >= target:
                return

    def _take(self, key: object) -> list:
        """Up to `max_batch_size` rows of the group, skipping requests already given up."""
        group, rows = self._waiting[key], 0
        batch: list[BatchRequest | StreamRequest | ScoreRequest] = []
        while group and (not batch or rows + group[0].n <= self.max_batch_size):
            item = group.pop(0)
            if isinstance(item, (BatchRequest, ScoreRequest)) and item.done.done():
                continue  # its client went away
            batch.append(item)
            rows += item.n
        if not group:
            del self._waiting[key]
        return batch

    def _stream_in_worker(self, job: StreamRequest, loop: asyncio.AbstractEventLoop) -> None:
        feed(
            job.answer,
            job.answer.emitter(loop),
            job.n,
            partial(_local_choice, job),
            stopped=lambda: self._closed,
        )


def _local_choice(job: StreamRequest, index: int) -> ChatStream:
    """Choice `index` of a streamed request, as the local provider streams it."""
    # Each choice of a seeded request gets its own seed, or all would be the same.
    seed = None if job.sampling.seed is None else job.sampling.seed + index
    sampling = _settings(replace(job.sampling, seed=seed))
    return engine_stream(job.loaded, job.messages, job.structure, **sampling)


def _settings(sampling: Sampling) -> dict:
    """The engine's keywords for `sampling` (its grammar kept as it is, not as a dict)."""
    return {field.name: getattr(sampling, field.name) for field in fields(sampling)}


def _batch_key(request: BatchRequest) -> object:
    # A seeded sample depends on its batch's other rows: it runs alone, so it is reproducible.
    if request.sampling.seed is not None:
        return request
    # Each row carries its own logit bias and grammar: requests differing only there batch
    # together; the tools are in the prompt, the same for the whole call.
    rowwise = replace(request.sampling, logit_bias=(), constraint=None)
    # Keyed by the weights, not the fine-tune: adapters of one base batch together, each
    # row with its own adapter.
    return (request.loaded.host, rowwise, request.structure.tools_json)


def _rows(group: list) -> int:
    return sum(item.n for item in group)


def _generate_batch(requests: list[BatchRequest], batch_size: int) -> list:
    """Each request's completions, or the exception it failed with (runs in the worker)."""
    first = requests[0]
    conversations = [request.messages for request in requests for _ in range(request.n)]
    biases = [dict(r.sampling.logit_bias) for r in requests for _ in range(r.n)]
    grammars = [r.sampling.constraint for r in requests for _ in range(r.n)]
    settings = {**_settings(first.sampling), "logit_bias": biases, "constraint": grammars}
    host = first.loaded.host
    try:
        with host.lock:
            completions = generate(
                host.model,
                first.loaded.tokenizer,
                conversations,
                batch_size=batch_size,
                tools=first.structure.tools,
                adapters=host.adapter_names([r.loaded for r in requests for _ in range(r.n)]),
                **settings,
            )
    except Exception as err:
        if len(requests) == 1:
            return [err]
        # One bad request (a prompt over the context, say) must not fail the others with it.
        return [
            outcome for request in requests for outcome in _generate_batch([request], batch_size)
        ]
    outcomes, begin = [], 0
    for request in requests:
        answers = completions[begin : begin + request.n]
        tokenizer = request.loaded.tokenizer
        outcomes.append([request.structure.finish(tokenizer, answer) for answer in answers])
        begin += request.n
    return outcomes


def _score(requests: list[ScoreRequest], batch_size: int) -> list:
    """The one request's answer scores and prompt length, or the exception it failed with
    (runs in the worker)."""
    [request] = requests
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
        return [(scores, len(encode_chat(tokenizer, request.messages)))]
    except Exception as err:
        return [err]


def _settle(batch: list[BatchRequest | ScoreRequest], outcomes: list) -> None:
    for request, outcome in zip(batch, outcomes, strict=True):
        if request.done.done():
            continue
        if isinstance(outcome, Exception):
            request.done.set_exception(outcome)
        else:
            request.done.set_result(outcome)


def shutting_down() -> TunelabError:
    """What requests still waiting get when the server stops (503 in OpenAI's envelope)."""
    return TunelabError("server_shutting_down", "The server is shutting down.")
