"""This machine as a provider: the engine answers chats, the registry and worker run jobs.

Models are the bundled SmolLM2, Hugging Face directories, tunelab training outputs, Hub ids
and the registry's local `ft:` models (resolved to their directories before they get here).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.engine.sources import ModelInfo, resolve_model_source
from tunelab.errors import usage_error
from tunelab.providers.answer_stream import AnswerStream
from tunelab.providers.base import ANSWER_FIELDS, ChatOptions, ChatStream, chat_settings
from tunelab.providers.local import jobs as local
from tunelab.providers.local.artifacts import JobWorkspace
from tunelab.providers.local.llamacpp import LlamaCppBackend, LlamaModel
from tunelab.providers.provider import (
    CHAT,
    FILES,
    FINE_TUNING,
    MODEL_DOWNLOAD,
    SCORING,
    Provider,
    ServingLimits,
)
from tunelab.registry import Job
from tunelab.types import Answer, AnswerScore

if TYPE_CHECKING:  # torch: imported when this machine first answers, not by light commands
    from tunelab.engine.generate import Sampling
    from tunelab.providers.local.model_cache import LoadedModel, ModelCache
    from tunelab.providers.local.queue import GenerationQueue

DEFAULT_MAX_TOKENS = 512  # `tunelab chat`'s default, for callers that leave it open
FALLBACK_MAX_TOKENS = 2048  # a server's default for models whose config states no context


def register_providers(register) -> None:
    register(LocalProvider)


class LocalProvider(Provider):
    """Training and answering on this machine (CPU or GPU), with the bundled model by default.

    One per process: its `ModelCache` holds the models loaded here for everything that asks
    (`tunelab chat`, evaluations, the server), and each server's event loop gets a
    `GenerationQueue` that batches its requests.
    """

    name = local.PROVIDER
    title = "this machine"
    capabilities = frozenset({FINE_TUNING, CHAT, FILES, MODEL_DOWNLOAD, SCORING})
    poll_seconds = 1.0
    poll_backs_off = False  # the worker writes progress into the registry: reading is cheap
    organization = local.ORG
    runs_here = True
    one_per_process = True
    answer_fields = frozenset(ANSWER_FIELDS)

    def __init__(self, *, base_url: str | None = None, key_variable: str | None = None) -> None:
        super().__init__(base_url=base_url, key_variable=key_variable)
        self._models: ModelCache | None = None
        self._queues: dict[asyncio.AbstractEventLoop, GenerationQueue] = {}
        self._limits = ServingLimits()
        self._llamacpp = LlamaCppBackend("torch")  # a server's choice, told in start_serving

    @property
    def model_cache(self) -> ModelCache:
        """The models loaded here, made on first use (it imports torch)."""
        if self._models is None:
            from tunelab.providers.local.model_cache import ModelCache  # torch: on first answer

            limits = self._limits
            self._models = ModelCache(limits.memory_budget_bytes, limits.max_adapters)
        return self._models

    @classmethod
    def owns(cls, name: str) -> str | None:
        """Existing directories and the bundled model's names are this machine's."""
        if name.startswith("ft:"):
            return None  # this machine's `ft:` models are in the registry, or nowhere
        if Path(name).expanduser().is_dir():
            return name
        return super().owns(name)

    @classmethod
    def check_model(
        cls, model: str, *, base_url: str | None = None, key_variable: str | None = None
    ) -> None:
        """A directory, training output, the bundled model or a Hub id: resolved without
        importing torch (`resolve_model_source` raises a clear error for anything else)."""
        resolve_model_source(model)

    def describe(self, model: str) -> str:
        return resolve_model_source(model).name

    # -- answering, in the caller's thread ----------------------------------------------

    def chat(self, model: str, messages: list[dict], **options) -> Answer:
        stream = self.stream_chat(model, messages, **options)
        for _ in stream:
            pass  # drain the stream: its result holds the whole answer and the usage
        assert stream.result is not None
        return stream.result

    def stream_chat(self, model: str, messages: list[dict], **options) -> ChatStream:
        from tunelab.providers.local.answering import engine_stream  # torch: on first answer

        return engine_stream(self.model_cache.get(model), messages, **engine_sampling(options))

    def answer_batch(
        self,
        model: str,
        conversations: list[list[dict]],
        *,
        progress=None,
        cancel=None,
        tools: list[dict] | None = None,
        **options,
    ) -> list[Answer]:
        """Batched through the engine, greedy unless a temperature is given; with `tools`
        (OpenAI's definitions, the same for every conversation) the model is shown them and
        its calls are read into `Answer.tool_calls`."""
        from tunelab.providers.local.answering import answer_chats  # torch: on first answer

        return answer_chats(
            self.model_cache.get(model),
            conversations,
            progress=progress,
            cancel=cancel,
            tools=tools,
            **engine_sampling(options),
        )

    def score(
        self,
        model: str,
        conversations: list[list[dict]],
        answers: list[str],
        *,
        progress=None,
        cancel=None,
    ) -> list[list[AnswerScore]]:
        from tunelab.providers.local.answering import score_chats  # torch: on first answer

        return score_chats(
            self.model_cache.get(model), conversations, answers, progress=progress, cancel=cancel
        )

    # -- answering for a server: batched in the generation queue -------------------------

    def start_serving(self, limits: ServingLimits) -> None:
        super().start_serving(limits)
        self._limits = limits
        if limits.backend != self._llamacpp.backend:
            self._llamacpp = LlamaCppBackend(limits.backend)
        if limits.memory_budget_bytes and self._models is not None:
            self._models.memory_budget_bytes = limits.memory_budget_bytes
        if limits.max_adapters and self._models is not None:
            self._models.max_adapters = limits.max_adapters

    def stop_serving(self) -> None:
        """Stop the queue of the running event loop, and free the models loaded for it."""
        super().stop_serving()
        try:
            loops = [asyncio.get_running_loop()]
        except RuntimeError:  # called outside the server's loop: stop every queue
            loops = list(self._queues)
        for loop in loops:
            queue = self._queues.pop(loop, None)
            if queue is not None:
                queue.close()
        if self._models is not None:
            self._models.clear()
        self._llamacpp.clear()

    def loaded_models(self) -> list[str]:
        return [] if self._models is None else self._models.directories()

    def forget_weights(self, path: str) -> bool:
        return self._models is not None and self._models.drop(path)

    async def serve_answers(
        self, model: str, messages: list[dict], options: ChatOptions
    ) -> list[Answer]:
        from tunelab.providers.local.answering import structure  # torch: on first answer
        from tunelab.providers.local.queue import BatchRequest

        llama = await self._llama_model(model, options)
        if llama is not None:
            return await asyncio.to_thread(
                lambda: [llama.answer(messages, options, index) for index in range(options.n)]
            )
        loaded = await self._loaded(model)
        loop = asyncio.get_running_loop()
        tools, constraint = structure(options, loaded.tokenizer)
        request = BatchRequest(
            loaded,
            messages,
            _sampling(options, loaded.info, constraint),
            options.n,
            loop.create_future(),
            loop.time(),
            tools,
        )
        self._queue().submit(request)
        return await request.done

    async def serve_stream(
        self,
        model: str,
        messages: list[dict],
        options: ChatOptions,
        answer: AnswerStream,
        release: Callable[[], None],
    ) -> None:
        from tunelab.providers.local.answering import structure  # torch: on first answer
        from tunelab.providers.local.queue import StreamRequest

        llama = await self._llama_model(model, options)
        if llama is not None:
            # llama.cpp streams from a relay thread, as hosted answers are streamed
            stream = partial(llama.stream, messages, options)
            self.relay_streams(answer, options.n, stream, release)
            return
        loaded = await self._loaded(model)
        tools, constraint = structure(options, loaded.tokenizer)
        sampling = _sampling(options, loaded.info, constraint)
        now = asyncio.get_running_loop().time()
        self._queue().submit(
            StreamRequest(loaded, messages, sampling, options.n, answer, release, now, tools)
        )

    async def serve_scores(
        self, model: str, messages: list[dict], answers: list[str]
    ) -> tuple[list[AnswerScore], int]:
        from tunelab.providers.local.queue import ScoreRequest  # torch: on first answer

        loaded = await self._loaded(model)
        loop = asyncio.get_running_loop()
        request = ScoreRequest(loaded, messages, answers, loop.create_future(), loop.time())
        self._queue().submit(request)
        return await request.done

    async def _llama_model(self, model: str, options: ChatOptions) -> LlamaModel | None:
        """llama.cpp's model when it answers this request (`ServingLimits.backend`), else
        None; converted and loaded in a thread the first time only."""
        if not self._llamacpp.takes(options):
            return None
        known, llama = self._llamacpp.cached(model)
        if known:
            return llama
        return await asyncio.to_thread(self._llamacpp.model_for, model)

    async def _loaded(self, model: str) -> LoadedModel:
        """The model from the cache: looked up on the event loop, resolved and loaded in a
        thread only when it is not there (a thread hop per request splits the batches)."""
        cached = self.model_cache.peek(model)
        if cached is not None:
            return cached
        return await asyncio.to_thread(self.model_cache.get, model)

    def _queue(self) -> GenerationQueue:
        """The generation queue of the running event loop (a server's), made on first use."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            from tunelab.providers.local.queue import GenerationQueue  # torch: on first answer

            limits = self._limits
            queue = GenerationQueue(limits.max_batch_size, limits.batch_window_seconds)
            self._queues[loop] = queue
        return queue

    # -- jobs: they live in the registry, run by `tunelab worker` ---------------------------

    @classmethod
    def training_model_spec(cls, model: str):
        return local.training_model_spec(model)

    @classmethod
    def start_job(cls, store, spec, report, *, start: bool = True) -> Job:
        return local.create_job(store, spec, report, start=start)

    @classmethod
    def refresh_job(cls, store, job: Job, *, events: bool = True) -> Job:
        return local.refresh(store, job)

    @classmethod
    def refresh_page(cls, store, jobs: list[Job]) -> list[Job]:
        return local.refresh_page(store, jobs)

    @classmethod
    def queue_note(cls, store, job: Job) -> str | None:
        return local.queue_note(store, job)

    @classmethod
    def stop_job(cls, store, job: Job, *, pause: bool) -> Job:
        return local.request_stop(store, job, pause)

    @classmethod
    def restart_job(cls, store, job: Job, *, start: bool = True) -> Job:
        job = local.requeue(store, job)
        if start:
            local.start_worker()
        return job

    @classmethod
    def import_job(cls, store, job_id: str, **endpoint) -> Job:
        raise usage_error(
            "nothing_to_import",
            "this machine's jobs are in the registry already.",
            hint="`tunelab jobs list` shows them",
        )

    @classmethod
    def discard_job(cls, store, job: Job) -> None:
        local.discard(job)

    @classmethod
    def checkpoints_here(cls, job: Job, points: list) -> list:
        """Recorded relative to the job's directory: here, or in the artefact store."""
        workspace = JobWorkspace.of(job)
        return [
            dataclasses.replace(
                point,
                fine_tuned_model_checkpoint=workspace.checkpoint_location(
                    point.fine_tuned_model_checkpoint
                ),
            )
            if point.fine_tuned_model_checkpoint
            else point
            for point in points
        ]


def _sampling(options: ChatOptions, info: ModelInfo, constraint=None) -> Sampling:
    """A server request's settings for the engine: greedy unless a temperature is given,
    up to the model's context unless `max_tokens` says less; `constraint`: the grammar its
    answers follow."""
    from tunelab.engine.generate import Sampling  # torch: on first answer

    temperature = 0.0 if options.temperature is None else options.temperature
    sampling = Sampling(
        max_new_tokens=options.max_tokens or info.context_length or FALLBACK_MAX_TOKENS,
        temperature=temperature,
        top_p=1.0 if options.top_p is None else options.top_p,
        stop=options.stop,
        seed=options.seed if temperature > 0 else None,  # greedy needs none: batch them all
        logprobs=options.top_logprobs if options.logprobs else None,
        logit_bias=options.logit_bias,
        constraint=constraint,
    )
    sampling.check()
    return sampling


def engine_sampling(options: dict) -> dict:
    """`chat`'s settings (OpenAI's names; an unknown one is a TypeError) as the engine's:
    greedy unless a temperature is given, `DEFAULT_MAX_TOKENS` unless `max_tokens` says;
    `logprobs` as the number of most likely tokens to list, `logit_bias` by token id,
    `grammar` (one, or one per conversation of a batch) as the engine's constraint."""
    given = chat_settings(**options)
    return {
        "constraint": _grammar_constraint(given.get("grammar")),
        "max_new_tokens": given.get("max_tokens") or DEFAULT_MAX_TOKENS,
        "temperature": given.get("temperature") or 0.0,
        "top_p": given.get("top_p", 1.0),
        "stop": given.get("stop") or (),
        "seed": given.get("seed"),
        "logprobs": given.get("top_logprobs", 0) if given.get("logprobs") else None,
        "logit_bias": {int(token): bias for token, bias in given.get("logit_bias", {}).items()},
    }


def _grammar_constraint(grammar):
    """A Lark grammar as the engine's `Constraint` (a list of them: one per conversation)."""
    if grammar is None:
        return None
    from tunelab.engine.grammar import Constraint  # llguidance and torch: only when answering

    if isinstance(grammar, str):
        return Constraint.lark(grammar)
    return [None if text is None else Constraint.lark(text) for text in grammar]
