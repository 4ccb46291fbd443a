"""The one interface every backend implements, the built-in ones and plugins alike.

A provider declares what it can do (`capabilities`), which model names are unmistakably its
own (`owns`), the models it offers (`models`), and implements the operations of those
capabilities. Whatever it does not offer raises `unsupported_operation`, naming itself.
The core never asks which provider it holds: it asks for a capability.

Job operations speak the plain objects of `tunelab.providers.base` in OpenAI's vocabulary;
answers are `tunelab.types.Answer`s, streamed as `ChatStream`s. Answering is the provider's
alone: one chat (`chat`, `stream_chat`), a batch of chats (`answer_batch`), fixed answers'
log-likelihoods where it has them (`score`, capability SCORING), and the same for
`tunelab serve`'s event loop (`serve_answers`, `serve_stream`, `serve_scores`). Whoever
holds weights (the local provider) keeps its own model cache and generation queue behind
these; nothing above the providers drives the engine to answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from tunelab.catalog import CATALOG, resolve_model
from tunelab.errors import Interrupted, TunelabError, check_cancel
from tunelab.providers.answer_stream import AnswerStream, feed
from tunelab.providers.base import (
    ChatOptions,
    ChatStream,
    JobCheckpoint,
    JobRequest,
    JobState,
    RemoteFile,
)
from tunelab.registry import Job
from tunelab.settings import get_secret
from tunelab.types import Answer, AnswerScore, JobEvent

Progress = Callable[[int], None]  # called with the number of items just finished

FINE_TUNING = "fine-tuning"
CHAT = "chat"
FILES = "files"
MODEL_DOWNLOAD = "model-download"
SCORING = "scoring"  # log-likelihoods of fixed answers: label scoring
CAPABILITIES = (FINE_TUNING, CHAT, FILES, MODEL_DOWNLOAD, SCORING)
HOSTED_CONCURRENCY = 4  # requests in flight at once when a batch goes one chat at a time
# What an SDK client is built with where no key may go (a stranger's host) or none is needed
# (`tunelab serve` on loopback): the SDKs refuse to start without some key.
PLACEHOLDER_KEY = "tunelab-no-key"


@dataclass(frozen=True)
class ServingLimits:
    """What a server allows the providers answering for it."""

    memory_budget_bytes: int | None = None  # for models held in memory (None: half of it)
    max_batch_size: int = 8  # rows generated together
    batch_window_seconds: float = 0.005  # how long a request waits for others to batch with
    max_adapters: int | None = None  # LoRA adapters one base holds (None: as memory allows)
    backend: str = "torch"  # the local inference backend: torch, auto or llamacpp


@cache
def relay_threads() -> ThreadPoolExecutor:
    """The threads that read hosted streams for the server: they wait on the network, not on
    torch, so each stream reads in a thread of its own."""
    return ThreadPoolExecutor(64, thread_name_prefix="tunelab-relay")


@dataclass(frozen=True)
class ModelEntry:
    """A model a provider offers (a base model it trains or answers with)."""

    id: str
    provider: str
    aliases: tuple[str, ...] = ()
    description: str = ""


class Provider:
    """A place that trains and/or serves models. Subclass it and register the class.

    Constructed with the endpoint's `base_url` (None: the provider's own) and, where the user
    named one for this endpoint, the environment variable holding its key. Methods that call a
    remote service retry 429, 5xx and connection errors (`tunelab.providers.hosted.retry`) and raise
    `TunelabError` for the rest; no message ever holds a key.
    """

    name: ClassVar[str]
    title: ClassVar[str] = ""  # for tables: "OpenAI", "Anthropic", ...
    capabilities: ClassVar[frozenset[str]] = frozenset()
    key_variable: ClassVar[str | None] = None  # where the provider's own key lives
    official_hosts: ClassVar[tuple[str, ...]] = ()  # the only hosts its own key goes to
    poll_seconds: ClassVar[float] = 5.0  # how often a waiting client looks at a job
    poll_backs_off: ClassVar[bool] = True  # a long wait looks less and less often
    organization: ClassVar[str | None] = None  # OpenAI's `organization_id` on its jobs
    runs_here: ClassVar[bool] = False  # jobs run on this machine, by `tunelab worker`
    # One instance per process (`registry.get_provider`): what it holds (loaded models, a
    # generation queue) is shared by everything that asks it in the process.
    one_per_process: ClassVar[bool] = False
    # Which of a chat request's answer fields (`ANSWER_FIELDS`: logprobs, logit_bias) its
    # answers honour; the others are refused by name, never dropped.
    answer_fields: ClassVar[frozenset[str]] = frozenset()
    # OpenAI's training methods (`method.type`) its fine-tuning jobs take: all three, as
    # OpenAI's API has them, unless the provider says fewer.
    training_methods: ClassVar[tuple[str, ...]] = ("supervised", "dpo", "reinforcement")

    def __init__(self, *, base_url: str | None = None, key_variable: str | None = None) -> None:
        self.base_url = base_url
        self.endpoint_key_variable = key_variable
        self.serving_stopped = False

    # -- models ---------------------------------------------------------------------------

    @classmethod
    def models(cls) -> list[ModelEntry]:
        """The base models this provider offers: by default, the catalog's for its name."""
        return [
            ModelEntry(spec.name, spec.provider, spec.aliases)
            for spec in CATALOG
            if spec.provider == cls.name
        ]

    @classmethod
    def owns(cls, name: str) -> str | None:
        """This provider's id for `name` when the name is unmistakably one of its models."""
        wanted = name.strip().lower()
        if wanted.startswith("ft:"):  # ft:BASE:org:suffix:id, made from one of its models
            base = cls.owns(wanted[3:].split(":", 1)[0])
            return name.strip() if base is not None else None
        for entry in cls.models():
            if wanted in (entry.id.lower(), *(alias.lower() for alias in entry.aliases)):
                return entry.id
        return None

    @classmethod
    def is_official(cls, base_url: str | None) -> bool:
        """Whether `base_url` (None: the provider's default) is one of its own hosts."""
        if base_url is None:
            return True
        host = (urlparse(base_url).hostname or "").lower()
        return any(host == h or host.endswith("." + h) for h in cls.official_hosts)

    @classmethod
    def endpoint_key(cls, base_url: str | None, key_variable: str | None) -> str | None:
        """The key to send to `base_url`, or None: keys never go to strangers.

        A key the user named for this endpoint (`key_variable`) goes to it; the provider's
        own key (`OPENAI_API_KEY`, ...) goes only to the provider's official hosts.
        """
        purpose = f"use the {cls.name} provider"
        if key_variable:
            return get_secret(key_variable, f"{purpose} at {base_url or 'its default host'}")
        if cls.key_variable and cls.is_official(base_url):
            return get_secret(cls.key_variable, purpose)
        return None

    @classmethod
    def sdk_key(cls, api_key: str | None, base_url: str | None, key_variable: str | None) -> str:
        """The key to build an SDK client with: the one passed in, else `endpoint_key`'s,
        else `PLACEHOLDER_KEY`."""
        return api_key or cls.endpoint_key(base_url, key_variable) or PLACEHOLDER_KEY

    @classmethod
    def supports(cls, capability: str) -> bool:
        return capability in cls.capabilities

    @classmethod
    def check_model(
        cls, model: str, *, base_url: str | None = None, key_variable: str | None = None
    ) -> None:
        """Refuse at once, loading and sending nothing, a model this provider cannot answer.

        By default: one whose key is not set (the key is read, never sent). The local
        provider checks that the model exists here.
        """
        cls.endpoint_key(base_url, key_variable)

    def describe(self, model: str) -> str:
        """How `tunelab chat` names the model it talks to."""
        return f"{model} ({self.name})"

    # -- chat -----------------------------------------------------------------------------

    def chat(
        self,
        model: str,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> Answer:
        raise self.unsupported("chat")

    def stream_chat(self, model: str, messages: list[dict], **options) -> ChatStream:
        """The answer as it arrives; providers that do not stream send it whole."""
        return ChatStream.of(self.chat(model, messages, **options))

    def answer_batch(
        self,
        model: str,
        conversations: list[list[dict]],
        *,
        progress: Progress | None = None,
        cancel=None,
        **options,
    ) -> list[Answer]:
        """One answer per conversation, in order (`options`: `chat`'s settings).

        By default a few `chat` calls at a time; a call that fails is that conversation's
        failed answer (`Answer.failed`), so one timeout does not throw away a long
        evaluation. `progress(n)` is called as answers finish; a set `cancel` event raises
        `Interrupted` holding the answers finished before it, in order.
        """

        def one(messages: list[dict]) -> Answer:
            check_cancel(cancel)
            try:
                answer = self.chat(model, messages, **options)
            except TunelabError as err:
                answer = Answer.failed(f"{err.code}: {err.message}")
            if progress is not None:
                progress(1)
            return answer

        answers: list[Answer] = []
        with ThreadPoolExecutor(HOSTED_CONCURRENCY) as pool:
            try:
                answers.extend(pool.map(one, conversations))  # in order, up to a cancel
            except Interrupted as stop:
                raise Interrupted(answers) from stop
        return answers

    def score(
        self,
        model: str,
        conversations: list[list[dict]],
        answers: list[str],
        *,
        progress: Progress | None = None,
        cancel=None,
    ) -> list[list[AnswerScore]]:
        """Each of `answers`' log-likelihood after each conversation (`[conversation][answer]`),
        for providers with the SCORING capability."""
        raise self.unsupported("log-likelihoods of answers (label scoring)")

    # -- answering for `tunelab serve` (its event loop) ------------------------------------
    # By default whole answers are `chat` calls in a thread and streams are relayed from a
    # thread of their own; the local provider batches through its generation queue instead.

    def start_serving(self, limits: ServingLimits) -> None:
        """Get ready to answer a server's requests (its memory budget, batch size)."""
        self.serving_stopped = False

    def stop_serving(self) -> None:
        """The server stops: streams still relayed stop at their next delta."""
        self.serving_stopped = True

    def loaded_models(self) -> list[str]:
        """Directories of the models this provider holds in memory (hosted: none)."""
        return []

    def forget_weights(self, path: str) -> bool:
        """Drop the model loaded from `path` (deleted) from memory; whether it was there."""
        return False

    async def serve_answers(
        self, model: str, messages: list[dict], options: ChatOptions
    ) -> list[Answer]:
        """`options.n` whole answers to `messages`."""
        settings = options.settings()
        return await asyncio.to_thread(
            lambda: [self.chat(model, messages, **settings) for _ in range(options.n)]
        )

    async def serve_stream(
        self,
        model: str,
        messages: list[dict],
        options: ChatOptions,
        answer: AnswerStream,
        release: Callable[[], None],
    ) -> None:
        """Start streaming `options.n` answers into `answer`; `release()` once done."""
        settings = options.settings()
        self.relay_streams(
            answer, options.n, lambda _: self.stream_chat(model, messages, **settings), release
        )

    def relay_streams(
        self,
        answer: AnswerStream,
        n: int,
        open_stream: Callable[[int], ChatStream],
        release: Callable[[], None],
    ) -> None:
        """Feed the `n` streams `open_stream(index)` into `answer` from a relay thread (off
        the running event loop, which it wakes per delta); `release()` once done."""
        loop = asyncio.get_running_loop()
        relay = partial(
            feed,
            answer,
            answer.emitter(loop),
            n,
            open_stream,
            stopped=lambda: self.serving_stopped,
        )
        loop.run_in_executor(relay_threads(), relay).add_done_callback(lambda _: release())

    async def serve_scores(
        self, model: str, messages: list[dict], answers: list[str]
    ) -> tuple[list[AnswerScore], int]:
        """Each of `answers`' log-likelihood after `messages`, and the prompt's tokens."""
        raise self.unsupported("log-likelihoods of answers (label scoring)")

    # -- files and jobs -------------------------------------------------------------------

    def upload_file(self, path: Path, purpose: str = "fine-tune") -> RemoteFile:
        raise self.unsupported("files")

    def download_file(self, file_id: str, destination: Path) -> RemoteFile:
        """Write the content of the provider's file `file_id` to `destination` (atomically).

        A file the provider no longer has raises `TunelabError` "provider_file_gone".
        """
        raise self.unsupported("files")

    def create_job(self, request: JobRequest) -> JobState:
        """Create a job. Retries never make a second job (see `REQUEST_ID_KEY`)."""
        raise self.unsupported("fine-tuning")

    def retrieve_job(self, job_id: str) -> JobState:
        raise self.unsupported("fine-tuning")

    def list_jobs(self, limit: int = 20) -> list[JobState]:
        raise self.unsupported("fine-tuning")

    def cancel_job(self, job_id: str) -> JobState:
        raise self.unsupported("fine-tuning")

    def pause_job(self, job_id: str) -> JobState:
        raise self.unsupported("pausing jobs")

    def resume_job(self, job_id: str) -> JobState:
        raise self.unsupported("resuming jobs")

    def list_events(self, job_id: str, limit: int = 100) -> list[JobEvent]:
        """The job's events, oldest first."""
        raise self.unsupported("fine-tuning")

    def list_checkpoints(self, job_id: str) -> list[JobCheckpoint]:
        raise self.unsupported("fine-tuning")

    def download_model(self, job_id: str, destination: Path, *, merged: bool = True) -> Path:
        """Fetch the trained weights (or adapter) into `destination`."""
        raise self.unsupported("model download")

    # -- jobs as the registry records them ------------------------------------------------
    # The registry holds every job; these say how a provider's jobs start and stay current.
    # A hosted service's come from `HostedProvider` (`tunelab.providers.hosted.service`);
    # the local provider, whose jobs live in the registry itself, has its own.

    @classmethod
    def training_model_spec(cls, model: str):
        """The catalog's `ModelSpec` that validation checks training files against, if any."""
        try:
            return resolve_model(model)
        except TunelabError:
            return None  # a model the catalog does not list: the provider checks it

    @classmethod
    def start_job(cls, store, spec, report, *, start: bool = True) -> Job:
        """Record and create the job `spec` (a `JobSpec`) asks for; returns the job."""
        raise cls.unsupported_here("fine-tuning")

    @classmethod
    def refresh_job(cls, store, job: Job, *, events: bool = True) -> Job:
        return job  # a provider that trains nothing has no job to bring up to date

    @classmethod
    def refresh_page(cls, store, jobs: list[Job]) -> list[Job]:
        """A listing's jobs of this provider, brought up to date (without their events)."""
        return [cls.refresh_job(store, job, events=False) for job in jobs]

    @classmethod
    def queue_note(cls, store, job: Job) -> str | None:
        """Why the queued `job` waits, where this machine knows (hosted queues do not say)."""
        return None

    @classmethod
    def stop_job(cls, store, job: Job, *, pause: bool) -> Job:
        raise cls.unsupported_here("pausing jobs" if pause else "fine-tuning")

    @classmethod
    def restart_job(cls, store, job: Job, *, start: bool = True) -> Job:
        raise cls.unsupported_here("resuming jobs")

    @classmethod
    def import_job(
        cls, store, job_id: str, *, base_url: str | None = None, key_variable: str | None = None
    ) -> Job:
        """Track a job started outside tunelab (its status, events, metrics and model)."""
        raise cls.unsupported_here("fine-tuning")

    @classmethod
    def discard_job(cls, store, job: Job) -> None:
        """Free what a job being forgotten holds on this machine (hosted: nothing)."""

    @classmethod
    def checkpoints_here(cls, job: Job, points: list) -> list:
        """The job's checkpoints as this machine reaches them (hosted: their model names, as
        recorded)."""
        return points

    def unsupported(self, what: str) -> TunelabError:
        return self.unsupported_here(what)

    @classmethod
    def unsupported_here(cls, what: str) -> TunelabError:
        able = ", ".join(sorted(cls.capabilities)) or "nothing"
        return TunelabError(
            "unsupported_operation",
            f"the {cls.name} provider does not offer {what} (it offers: {able}).",
            hint="`tunelab providers list` shows what each provider can do",
        )
