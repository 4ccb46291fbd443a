"""Chat answers for the server: models loaded once and cached, requests batched.

Model names resolve as everywhere else (`resolve_chat_model`: base aliases, directories,
training outputs, registry `ft:` names, `PROVIDER/MODEL`, `MODEL@URL`). Local models load off
the event loop, once however many requests ask at the same moment, into an LRU cache kept
within a memory budget. All torch work runs in ONE worker thread: non-streaming requests for
the same model and sampling settings that arrive together (or while the worker is busy) are
answered by one call to the engine's batched `generate`; streamed requests run `stream_chat`
there and hand their deltas to the event loop.
Models whose weights are elsewhere answer through their provider's `chat`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from tunelab.engine.generate import Completion, Sampling, generate, stream_chat
from tunelab.engine.models import ModelInfo, load_base, resolve_model_source
from tunelab.providers.resolve import ChatModel, resolve_chat_model
from tunelab.server.errors import ApiError

MEMORY_FRACTION = 0.5  # of RAM, or of free GPU memory, for cached models by default
DEFAULT_TEMPERATURE = 0.0  # greedy, as `tunelab chat` and evaluation: same question, same answer
FALLBACK_MAX_TOKENS = 2048  # for models whose config states no context length
_END = object()  # marks the end of a stream's events
# After a batch of several rows, how long the next group may wait for those clients to return.
REFILL_SECONDS = 0.03


@dataclass(frozen=True)
class ChatOptions:
    """A request's generation settings; None where the client left OpenAI's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1


@dataclass(frozen=True)
class ChatAnswer:
    model: str
    choices: list[Completion]
    prompt_tokens: int
    completion_tokens: int


@dataclass(eq=False)
class _Loaded:
    key: str  # the directory the weights came from
    model: torch.nn.Module
    tokenizer: object
    info: ModelInfo
    bytes: int


@dataclass(eq=False)
class _Request:
    loaded: _Loaded
    messages: list[dict]
    sampling: Sampling
    n: int
    done: asyncio.Future
    arrived: float


class AnswerStream:
    """Iterate for `(choice index, text delta)` and, when a choice ends, `(index, Completion)`."""

    def __init__(self) -> None:
        self._events: asyncio.Queue = asyncio.Queue()
        self._first = None
        self.cancelled = threading.Event()

    @classmethod
    def of(cls, choices: list[Completion]) -> AnswerStream:
        """A whole answer as one delta per choice (hosted providers are not streamed)."""
        stream = cls()
        for index, choice in enumerate(choices):
            stream._events.put_nowait((index, choice.text))
            stream._events.put_nowait((index, choice))
        stream._events.put_nowait(_END)
        return stream

    async def started(self) -> None:
        """Wait for the first event, so that an error comes before any response is sent."""
        self._first = await self._events.get()
        if isinstance(self._first, BaseException):
            raise self._first

    async def __aiter__(self) -> AsyncIterator[tuple[int, str | Completion]]:
        event = self._first if self._first is not None else await self._events.get()
        while event is not _END:
            if isinstance(event, BaseException):
                raise event
            yield event
            event = await self._events.get()

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass(eq=False)
class _StreamJob:
    loaded: _Loaded
    messages: list[dict]
    sampling: Sampling
    n: int
    answer: AnswerStream
    release: Callable[[], None]
    arrived: float


class InferenceService:
    """Answers chat requests; one per server, used from its event loop."""

    def __init__(
        self,
        memory_budget_bytes: int | None = None,
        max_batch_size: int = 8,
        max_pending: int = 64,
        batch_window_seconds: float = 0.005,
    ) -> None:
        self.memory_budget_bytes = memory_budget_bytes or default_memory_budget()
        self.max_batch_size = max(1, max_batch_size)
        self.max_pending = max_pending
        self.batch_window_seconds = batch_window_seconds
        self._models: OrderedDict[str, _Loaded] = OrderedDict()  # least recently used first
        self._loading: dict[str, asyncio.Task] = {}
        self._waiting: OrderedDict[object, list] = OrderedDict()  # batch key → requests
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None
        self._pending = 0
        self._closed = threading.Event()
        # Rows of the last batch and when it finished: clients it answered come back together.
        self._last_rows, self._free_since = 1, 0.0
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="tunelab-generate")
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="tunelab-load")

    @property
    def pending(self) -> int:
        """Requests admitted and not yet answered."""
        return self._pending

    def loaded_models(self) -> list[str]:
        """Directories of the cached models, least recently used first."""
        return list(self._models)

    async def complete(self, model: str, messages: list[dict], options: ChatOptions) -> ChatAnswer:
        release = self._admit()
        try:
            target, info = await asyncio.to_thread(_resolve, model)
            if info is None:
                choices = await asyncio.to_thread(_ask_hosted, target, messages, options)
                return _answer(model, choices)
            loaded = await self._model(target.engine_source, info)
            sampling = _sampling(options, loaded.info)
            request = _Request(loaded, messages, sampling, options.n,
                               asyncio.get_running_loop().create_future(), _now())  # fmt: skip
            self._enqueue(_batch_key(request), request)
            return _answer(model, await request.done)
        finally:
            release()

    async def stream(self, model: str, messages: list[dict], options: ChatOptions) -> AnswerStream:
        """Start answering; returns once the first delta (or an error) is there."""
        release = self._admit()
        try:
            target, info = await asyncio.to_thread(_resolve, model)
            if info is None:
                choices = await asyncio.to_thread(_ask_hosted, target, messages, options)
                release()
                return AnswerStream.of(choices)
            loaded = await self._model(target.engine_source, info)
            job = _StreamJob(loaded, messages, _sampling(options, loaded.info), options.n,
                             AnswerStream(), release, _now())  # fmt: skip
        except BaseException:
            release()
            raise
        self._enqueue(job, job)
        try:
            await job.answer.started()
        except BaseException:
            job.answer.cancel()
            raise
        return job.answer

    def unload(self, path: str) -> bool:
        """Drop the model loaded from `path` (a deleted fine-tuned model) from the cache."""
        return self._models.pop(str(Path(path).expanduser().resolve()), None) is not None

    def close(self) -> None:
        self._closed.set()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        for item in itertools.chain.from_iterable(self._waiting.values()):
            if isinstance(item, _Request) and not item.done.done():
                item.done.set_exception(_shutting_down())
        self._waiting.clear()
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._models.clear()

    # -- admission and models -----------------------------------------------------------

    def _admit(self) -> Callable[[], None]:
        """Count a request in, or refuse it when too many wait; returns its release."""
        if self._closed.is_set():
            raise _shutting_down()
        if self._pending >= self.max_pending:
            raise ApiError(429, f"The server is busy ({self._pending} requests waiting); "
                           "retry shortly.", code="server_busy",
                           headers={"Retry-After": "1"})  # fmt: skip
        self._pending += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._pending -= 1

        return release

    async def _model(self, source: str, info: ModelInfo) -> _Loaded:
        key = str(info.path)
        loaded = self._models.get(key)
        if loaded is not None:
            self._models.move_to_end(key)
            return loaded
        task = self._loading.get(key)
        if task is None:  # the first request for it loads it; the others wait for that load
            task = asyncio.create_task(self._load(key, source, info))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load(self, key: str, source: str, info: ModelInfo) -> _Loaded:
        loop = asyncio.get_running_loop()
        self._make_room(await loop.run_in_executor(self._loader, estimated_bytes, info))
        model, tokenizer, info = await loop.run_in_executor(self._loader, load_base, source)
        loaded = _Loaded(key, model, tokenizer, info, model_bytes(model))
        self._make_room(loaded.bytes)
        self._models[key] = loaded  # kept even when it alone exceeds the budget
        return loaded

    def _make_room(self, incoming: int) -> None:
        """Evict least recently used models until `incoming` more bytes fit the budget."""
        while self._models and self._used() + incoming > self.memory_budget_bytes:
            self._models.popitem(last=False)

    def _used(self) -> int:
        return sum(loaded.bytes for loaded in self._models.values())

    # -- batching and the worker ----------------------------------------------------------

    def _enqueue(self, key: object, item: _Request | _StreamJob) -> None:
        self._waiting.setdefault(key, []).append(item)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch())
        self._wakeup.set()

    async def _dispatch(self) -> None:
        """Run the oldest group next; requests arriving meanwhile gather into groups."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            key, group = next(iter(self._waiting.items()))
            if isinstance(group[0], _Request):
                await self._gather(group)
            batch = self._take(key)
            if isinstance(key, _StreamJob):
                try:
                    await loop.run_in_executor(self._worker, self._stream_in_worker, key, loop)
                finally:
                    key.release()
            elif batch:
                try:
                    outcomes = await loop.run_in_executor(
                        self._worker, _generate_batch, batch, self.max_batch_size
                    )
                except asyncio.CancelledError:  # closing: answer them rather than leave them
                    _settle(batch, [_shutting_down() for _ in batch])
                    raise
                _settle(batch, outcomes)
                self._last_rows, self._free_since = _rows(batch), _now()

    async def _gather(self, group: list) -> None:
        """Let a group fill before it runs.

        Every group waits `batch_window_seconds` after its first request. After a batch of
        several rows, a group smaller than it also waits (up to REFILL_SECONDS after the
        worker came free) for the clients just answered to send their next requests:
        otherwise concurrent clients split into half-size batches that alternate.
        """
        target = min(self.max_batch_size, self._last_rows)
        deadline = group[0].arrived + self.batch_window_seconds
        if self._last_rows > 1 and _rows(group) < target:
            deadline = max(deadline, self._free_since + REFILL_SECONDS)
        while _rows(group) < self.max_batch_size and (delay := deadline - _now()) > 0:
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay)
            except asyncio.TimeoutError:
                return
            if self._last_rows > 1 and _rows(group) >= target:
                return

    def _take(self, key: object) -> list:
        """Up to `max_batch_size` rows of the group, skipping requests already given up."""
        group, batch, rows = self._waiting[key], [], 0
        while group and (not batch or rows + group[0].n <= self.max_batch_size):
            item = group.pop(0)
            if isinstance(item, _Request) and item.done.done():
                continue  # its client went away
            batch.append(item)
            rows += item.n
        if not group:
            del self._waiting[key]
        return batch

    def _stream_in_worker(self, job: _StreamJob, loop: asyncio.AbstractEventLoop) -> None:
        def emit(event) -> None:
            try:
                loop.call_soon_threadsafe(job.answer._events.put_nowait, event)
            except RuntimeError:  # the event loop has closed: nobody is listening
                job.answer.cancel()

        try:
            for index in range(job.n):
                # Each choice of a seeded request gets its own seed, or all would be the same.
                seed = None if job.sampling.seed is None else job.sampling.seed + index
                chat = stream_chat(job.loaded.model, job.loaded.tokenizer, job.messages,
                                   **asdict(replace(job.sampling, seed=seed)))  # fmt: skip
                for delta in chat:
                    if job.answer.cancelled.is_set() or self._closed.is_set():
                        return
                    emit((index, delta))
                emit((index, chat.completion))
        except Exception as err:  # prompt too long, a template error, or a bug: tell the client
            emit(err)
        finally:
            emit(_END)


def _resolve(name: str) -> tuple[ChatModel, ModelInfo | None]:
    """Where `name` answers, and for a model with weights here what it is (none loaded)."""
    target = resolve_chat_model(name)
    source = target.engine_source
    if source is None:
        return target, None
    return target, resolve_model_source(source)


def _sampling(options: ChatOptions, info: ModelInfo) -> Sampling:
    temperature = DEFAULT_TEMPERATURE if options.temperature is None else options.temperature
    sampling = Sampling(
        max_new_tokens=options.max_tokens or info.context_length or FALLBACK_MAX_TOKENS,
        temperature=temperature,
        top_p=1.0 if options.top_p is None else options.top_p,
        stop=options.stop,
        seed=options.seed if temperature > 0 else None,  # greedy needs none: batch them all
    )
    sampling.check()
    return sampling


def _batch_key(request: _Request) -> object:
    # A seeded sample depends on its batch's other rows: it runs alone, so it is reproducible.
    if request.sampling.seed is not None:
        return request
    return (request.loaded, request.sampling)


def _rows(group: list) -> int:
    return sum(item.n for item in group)


def _generate_batch(requests: list[_Request], batch_size: int) -> list:
    """Each request's completions, or the exception it failed with (runs in the worker)."""
    first = requests[0]
    conversations = [request.messages for request in requests for _ in range(request.n)]
    try:
        completions = generate(first.loaded.model, first.loaded.tokenizer, conversations,
                               batch_size=batch_size, **asdict(first.sampling))  # fmt: skip
    except Exception as err:
        if len(requests) == 1:
            return [err]
        # One bad request (a prompt over the context, say) must not fail the others with it.
        return [
            outcome for request in requests for outcome in _generate_batch([request], batch_size)
        ]
    outcomes, begin = [], 0
    for request in requests:
        outcomes.append(completions[begin : begin + request.n])
        begin += request.n
    return outcomes


def _settle(batch: list[_Request], outcomes: list) -> None:
    for request, outcome in zip(batch, outcomes, strict=True):
        if request.done.done():
            continue
        if isinstance(outcome, Exception):
            request.done.set_exception(outcome)
        else:
            request.done.set_result(outcome)


def _ask_hosted(target: ChatModel, messages: list[dict], options: ChatOptions) -> list[Completion]:
    results = [
        target.chat(
            messages,
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            stop=list(options.stop) or None,
            seed=options.seed,
        )
        for _ in range(options.n)
    ]
    return [
        Completion(r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens) for r in results
    ]


def _answer(model: str, choices: list[Completion]) -> ChatAnswer:
    # OpenAI counts the prompt once however many choices it asked for.
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    return ChatAnswer(model, choices, choices[0].prompt_tokens, completion_tokens)


def _shutting_down() -> ApiError:
    return ApiError(503, "The server is shutting down.", code="server_shutting_down")


def _now() -> float:
    return asyncio.get_running_loop().time()


def default_memory_budget() -> int:
    """Half the free GPU memory where models load on CUDA, else half the machine's RAM."""
    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return int(free * MEMORY_FRACTION)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        total = 16 * 1024**3
    return int(total * MEMORY_FRACTION)


def model_bytes(model: torch.nn.Module) -> int:
    """Parameter bytes (buffers such as rotary tables are comparatively nothing)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def estimated_bytes(info: ModelInfo) -> int:
    """Parameter bytes once loaded in fp32 (as `load_base` loads), read from safetensors
    headers, so that room is made before loading; 0 when the weights are not at hand yet."""
    if info.is_adapter:  # merged into its base: the base's size
        info = resolve_model_source(info.base_model)
    elements = 0
    for path in Path(info.path).glob("*.safetensors"):
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        except (OSError, ValueError):
            continue
        elements += sum(
            math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__"
        )
    return elements * 4
