"""This machine as a provider: the engine answers chats, the registry and worker run jobs.

Models are the bundled SmolLM2, Hugging Face directories, tunelab training outputs, Hub ids
and the registry's local `ft:` models (resolved to their directories before they get here).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.providers.base import ChatResult, ChatStream
from tunelab.providers.local import jobs as local
from tunelab.providers.local.artifacts import checkpoint_location
from tunelab.providers.provider import CHAT, FILES, FINE_TUNING, MODEL_DOWNLOAD, Provider
from tunelab.registry import Job

DEFAULT_MAX_TOKENS = 512  # `tunelab chat`'s default, for callers that leave it open


def register_providers(register) -> None:
    register(LocalProvider)


class LocalProvider(Provider):
    """Training and chat on this machine (CPU or GPU), with the bundled model by default."""

    name = local.PROVIDER
    title = "this machine"
    capabilities = frozenset({FINE_TUNING, CHAT, FILES, MODEL_DOWNLOAD})
    poll_seconds = 1.0
    poll_backs_off = False  # the worker writes progress into the registry: reading is cheap
    organization = local.ORG
    runs_here = True

    def __init__(self, *, base_url: str | None = None, key_variable: str | None = None) -> None:
        super().__init__(base_url=base_url, key_variable=key_variable)
        self._loaded: dict[str, tuple] = {}  # source → (model, tokenizer, info)

    @classmethod
    def owns(cls, name: str) -> str | None:
        """Existing directories and the bundled model's names are this machine's."""
        if name.startswith("ft:"):
            return None  # this machine's `ft:` models are in the registry, or nowhere
        if Path(name).expanduser().is_dir():
            return name
        return super().owns(name)

    @classmethod
    def check_model(cls, model: str, *, base_url: str | None = None,
                    key_variable: str | None = None) -> None:  # fmt: skip
        """A directory, training output, the bundled model or a Hub id: resolved without
        importing torch (`resolve_model_source` raises a clear error for anything else)."""
        from tunelab.engine.sources import resolve_model_source

        resolve_model_source(model)

    def engine_source(self, model: str) -> str:
        return model

    def describe(self, model: str) -> str:
        return self.load(model)[2].name

    def load(self, model: str) -> tuple:
        """The engine's (model, tokenizer, info) for `model`, loaded once per provider."""
        if model not in self._loaded:
            from tunelab.engine.models import load_base

            self._loaded[model] = load_base(model)
        return self._loaded[model]

    def chat(self, model: str, messages: list[dict], **options) -> ChatResult:
        stream = self.stream_chat(model, messages, **options)
        for _ in stream:
            pass  # drain the stream: its result holds the whole answer and the usage
        return stream.result

    def stream_chat(
        self,
        model: str,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> ChatStream:
        loaded, tokenizer, info = self.load(model)
        return engine_stream(loaded, tokenizer, info.name, messages,
                             max_new_tokens=max_tokens or DEFAULT_MAX_TOKENS,
                             temperature=temperature or 0.0,
                             top_p=1.0 if top_p is None else top_p,
                             stop=stop or (), seed=seed)  # fmt: skip

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
    def import_job(cls, store, job_id: str, **endpoint) -> dict:
        raise TunelabError("nothing_to_import", "this machine's jobs are in the registry already.",
                           hint="`tunelab jobs list` shows them", exit_code=2)  # fmt: skip

    @classmethod
    def discard_job(cls, store, job: Job) -> None:
        local.discard(job)

    @classmethod
    def checkpoints_here(cls, job: Job, points: list) -> list:
        """Recorded relative to the job's directory: here, or in the artefact store."""
        return [
            dataclasses.replace(point, fine_tuned_model_checkpoint=checkpoint_location(
                job, point.fine_tuned_model_checkpoint))
            if point.fine_tuned_model_checkpoint else point
            for point in points
        ]  # fmt: skip


def engine_stream(model, tokenizer, name: str, messages: list[dict], **sampling) -> ChatStream:
    """The engine's answer to `messages` as a provider's `ChatStream` (`sampling`: the
    engine's `stream_chat` settings). `tunelab serve` streams its cached models through it."""
    from tunelab.engine.generate import stream_chat  # torch loads only when needed

    chat = stream_chat(model, tokenizer, messages, **sampling)

    def events() -> Generator[str, None, ChatResult]:
        began = time.perf_counter()
        yield from chat
        done = chat.completion
        return ChatResult(done.text, name, done.finish_reason, done.prompt_tokens,
                          done.completion_tokens, time.perf_counter() - began)  # fmt: skip

    return ChatStream(events())
