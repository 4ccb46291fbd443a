"""Chat answers for the server: what the routes call.

Model names resolve as everywhere else (`resolve_chat_model`: base aliases, directories,
training outputs, registry `ft:` names, `PROVIDER/MODEL`, `MODEL@URL`). A model with weights
here comes from the `ModelCache` and is answered by the `GenerationQueue` (one torch worker,
requests batched); a model whose weights are elsewhere answers through its provider, streamed
as the provider streams it (`Provider.stream_chat`), delta by delta, in a thread of its own.
`InferenceService` admits requests (refusing them with 429 when too many wait) and hands
each to the right one. `classify` answers with the most likely of a request's labels
(label scoring, as `eval classify` and `tunelab chat --labels` do), for local models only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from tunelab.engine.generate import Completion, Sampling
from tunelab.engine.models import ModelInfo, resolve_model_source
from tunelab.engine.score import AnswerScore, best_answer
from tunelab.providers.resolve import ChatModel, resolve_chat_model
from tunelab.server.answer_stream import AnswerStream, completion_of, feed
from tunelab.server.errors import ApiError, shutting_down
from tunelab.server.generation_queue import (
    BatchRequest,
    GenerationQueue,
    ScoreRequest,
    StreamRequest,
)
from tunelab.server.model_cache import ModelCache

DEFAULT_TEMPERATURE = 0.0  # greedy, as `tunelab chat` and evaluation: same question, same answer
FALLBACK_MAX_TOKENS = 2048  # for models whose config states no context length


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
    # With labels: each label's answer log-likelihood, in the request's order.
    label_scores: list[tuple[str, AnswerScore]] | None = None


class InferenceService:
    """Answers chat requests; one per server, used from its event loop."""

    def __init__(
        self,
        memory_budget_bytes: int | None = None,
        max_batch_size: int = 8,
        max_pending: int = 64,
        batch_window_seconds: float = 0.005,
    ) -> None:
        self.max_pending = max_pending
        self._cache = ModelCache(memory_budget_bytes)
        self._queue = GenerationQueue(max_batch_size, batch_window_seconds)
        # Hosted streams wait on the network, not on torch: each reads in a thread of its own.
        self._hosted = ThreadPoolExecutor(max(1, max_pending), thread_name_prefix="tunelab-relay")
        self._pending = 0
        self._closed = False

    @property
    def pending(self) -> int:
        """Requests admitted and not yet answered."""
        return self._pending

    def loaded_models(self) -> list[str]:
        """Directories of the cached models, least recently used first."""
        return self._cache.directories()

    async def complete(self, model: str, messages: list[dict], options: ChatOptions) -> ChatAnswer:
        release = self._admit()
        try:
            target, info = await asyncio.to_thread(_resolve, model)
            if info is None:
                choices = await asyncio.to_thread(_ask_hosted, target, messages, options)
                return _answer(model, choices)
            loaded = await self._cache.get(target.engine_source, info)
            request = BatchRequest(loaded, messages, _sampling(options, loaded.info), options.n,
                                   asyncio.get_running_loop().create_future(), _now())  # fmt: skip
            self._queue.submit(request)
            return _answer(model, await request.done)
        finally:
            release()

    async def classify(self, model: str, messages: list[dict], labels: list[str],
                       answers: list[str]) -> ChatAnswer:  # fmt: skip
        """The answer (of `answers`, one per label) the model finds most likely after the
        messages; needs the model's log-likelihoods, so its weights must be here."""
        release = self._admit()
        try:
            target, info = await asyncio.to_thread(_resolve, model)
            if info is None:
                raise ApiError(400, f"{model} gives no log-likelihoods, so its labels cannot "
                               "be scored; drop `labels` to have it generate.",
                               code="no_logprobs", param="labels")  # fmt: skip
            loaded = await self._cache.get(target.engine_source, info)
            request = ScoreRequest(loaded, messages, answers,
                                   asyncio.get_running_loop().create_future(), _now())  # fmt: skip
            self._queue.submit(request)
            scores, prompt_tokens = await request.done
        finally:
            release()
        best = best_answer(scores)
        choice = Completion(answers[best], "stop", prompt_tokens, scores[best].n_tokens)
        return ChatAnswer(model, [choice], prompt_tokens, scores[best].n_tokens,
                          label_scores=list(zip(labels, scores, strict=True)))  # fmt: skip

    async def stream(self, model: str, messages: list[dict], options: ChatOptions) -> AnswerStream:
        """Start answering; returns once the first delta (or an error) is there."""
        release = self._admit()
        try:
            target, info = await asyncio.to_thread(_resolve, model)
            answer = AnswerStream()
            if info is None:
                self._stream_hosted(target, messages, options, answer, release)
            else:
                loaded = await self._cache.get(target.engine_source, info)
                sampling = _sampling(options, loaded.info)
                self._queue.submit(StreamRequest(loaded, messages, sampling, options.n, answer,
                                                 release, _now()))  # fmt: skip
        except BaseException:
            release()
            raise
        try:
            await answer.started()
        except BaseException:
            answer.cancel()
            raise
        return answer

    def _stream_hosted(self, target: ChatModel, messages: list[dict], options: ChatOptions,
                       answer: AnswerStream, release: Callable[[], None]) -> None:  # fmt: skip
        """Relay the provider's stream, read in a thread of its own, as it arrives."""
        loop = asyncio.get_running_loop()
        settings = _provider_settings(options)
        relay = partial(feed, answer, answer.emitter(loop), options.n,
                        lambda _: target.stream(messages, **settings),
                        stopped=lambda: self._closed)  # fmt: skip
        loop.run_in_executor(self._hosted, relay).add_done_callback(lambda _: release())

    def unload(self, path: str) -> bool:
        """Drop the model loaded from `path` (a deleted fine-tuned model) from the cache."""
        return self._cache.drop(path)

    def close(self) -> None:
        self._closed = True
        self._queue.close()
        self._cache.close()
        self._hosted.shutdown(wait=False, cancel_futures=True)

    def _admit(self) -> Callable[[], None]:
        """Count a request in, or refuse it when too many wait; returns its release."""
        if self._closed:
            raise shutting_down()
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


def _ask_hosted(target: ChatModel, messages: list[dict], options: ChatOptions) -> list[Completion]:
    settings = _provider_settings(options)
    return [completion_of(target.chat(messages, **settings)) for _ in range(options.n)]


def _provider_settings(options: ChatOptions) -> dict:
    """The request's settings in the providers' terms (None: the provider's default)."""
    return {
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "stop": list(options.stop) or None,
        "seed": options.seed,
    }


def _answer(model: str, choices: list[Completion]) -> ChatAnswer:
    # OpenAI counts the prompt once however many choices it asked for.
    completion_tokens = sum(choice.completion_tokens for choice in choices)
    return ChatAnswer(model, choices, choices[0].prompt_tokens, completion_tokens)


def _now() -> float:
    return asyncio.get_running_loop().time()
