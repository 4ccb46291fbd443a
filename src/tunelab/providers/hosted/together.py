"""Together AI as a provider, through the official `together` SDK.

Together speaks its own vocabulary (statuses such as `pending` or `user_error`, `lora_r`, an
absolute learning rate, ISO timestamps, no job metadata); `together_mapping.py` maps it onto
tunelab's plain objects. The SDK's own retries are off: `tunelab.providers.hosted.retry` decides, so
that a retried create can first look for the job its failed attempt may have made.

Chat speaks OpenAI's shapes: `response_format` (json_object, json_schema), `tools` and
`tool_choice` and `logit_bias` pass through as the caller wrote them, and tool calls come
back as OpenAI's. Two fields are refused by name: `logprobs`, which Together answers in a
shape of its own (token strings without their bytes, one dictionary of top tokens per
answer, a bare number per streamed chunk) that does not map onto OpenAI's per token, and
`parallel_tool_calls`, which its chat API does not take.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast, get_args

import httpx

from tunelab.errors import TunelabError
from tunelab.io import check_output_path, commit, staged_write
from tunelab.lazy import LazyModule
from tunelab.providers.base import (
    ChatStream,
    JobCheckpoint,
    JobRequest,
    JobState,
    RemoteFile,
)
from tunelab.providers.hosted.openai_answers import tool_calls
from tunelab.providers.hosted.openai_chunks import chunk_stream
from tunelab.providers.hosted.service import HostedProvider
from tunelab.providers.hosted.together_mapping import (
    create_arguments,
    download_kind,
    job_checkpoint,
    job_event,
    job_state,
    remote_file,
    unix_seconds,
)
from tunelab.providers.provider import CHAT, FILES, FINE_TUNING, MODEL_DOWNLOAD
from tunelab.types import Answer, JobEvent, Usage

# The SDK loads when a call needs it, not at `tunelab --help`.
if TYPE_CHECKING:  # the SDK's own types, for the checker
    import together
    from together.types.chat import ChatCompletionMessageParam
else:
    together = LazyModule("together")
together_lib = LazyModule("together.lib")
together_types = LazyModule("together.types")

T = TypeVar("T")
PROVIDER = "Together AI"
KEY_VARIABLE = "TOGETHER_API_KEY"
# Reconciliation compares Together's clock with ours; a job stamped a little before our first
# attempt began is still the one that attempt made.
CLOCK_SKEW_SECONDS = 10
DOWNLOAD_CHUNK_BYTES = 1 << 20


def register_providers(register) -> None:
    register(TogetherProvider)


class TogetherProvider(HostedProvider):
    """Fine-tuning, chat and downloads on Together AI."""

    name = "together"
    title = "Together AI"
    capabilities = frozenset({FINE_TUNING, CHAT, FILES, MODEL_DOWNLOAD})
    key_variable = KEY_VARIABLE
    official_hosts = ("api.together.xyz", "api.together.ai")
    answer_fields = frozenset({"logit_bias", "response_format", "tools"})
    training_methods = ("supervised", "dpo")

    def _new_client(self, api_key: str, base_url: str | None) -> together.Together:
        return together.Together(api_key=api_key, base_url=_sdk_base_url(base_url), max_retries=0)

    def _sdk_error(self) -> type[Exception]:
        return together.APIError

    # Files

    def upload_file(self, path: Path, purpose: str = "fine-tune") -> RemoteFile:
        path = Path(path)
        if purpose not in get_args(together_types.FilePurpose):
            raise TunelabError(
                "unsupported_purpose",
                f"{PROVIDER} does not take files for '{purpose}'.",
                hint=f"use one of: {', '.join(get_args(together_types.FilePurpose))}",
            )
        _check_file_as_together_does(path, purpose)
        uploaded = self._call(lambda: self._client.files.upload(path, purpose=purpose, check=False))
        return remote_file(_as_dict(uploaded))

    # Jobs

    def create_job(self, request: JobRequest) -> JobState:
        """Create a job; `request.metadata` is not sent (Together jobs have none)."""
        arguments = create_arguments(request)
        limits = self._call(lambda: self._client.fine_tuning.model_limits(model_name=request.model))
        started = time.time()

        def create() -> JobState:
            try:
                job = self._client.fine_tuning.create(**arguments, model_limits=limits)
            except ValueError as err:  # the SDK checks values against the model's limits
                raise TunelabError(
                    "invalid_hyperparameter",
                    f"{PROVIDER} would refuse this job: {err}",
                    hint=f"see the limits for {request.model} in Together's fine-tuning docs",
                ) from None
            return job_state(_as_dict(job))

        return self._call(create, before_retry=lambda: self._find_created_job(request, started))

    def _find_created_job(self, request: JobRequest, since: float) -> JobState | None:
        """The job a failed create attempt made after all, if Together lists one."""
        for job in self._list_job_dicts():
            created_at = unix_seconds(job.get("created_at"))
            if (
                job.get("training_file") == request.training_file
                and job.get("model") == request.model
                and (job.get("suffix") or None) == (request.suffix or None)
                and created_at is not None
                and created_at >= since - CLOCK_SKEW_SECONDS
            ):
                return job_state(job)
        return None

    def retrieve_job(self, job_id: str) -> JobState:
        return job_state(self._retrieve_job_dict(job_id))

    def list_jobs(self, limit: int = 20) -> list[JobState]:
        """Jobs, newest first."""
        return [job_state(job) for job in self._list_job_dicts()[:limit]]

    def cancel_job(self, job_id: str) -> JobState:
        return job_state(_as_dict(self._call(lambda: self._client.fine_tuning.cancel(job_id))))

    def pause_job(self, job_id: str) -> JobState:
        raise _unsupported("pausing a job")

    def resume_job(self, job_id: str) -> JobState:
        raise _unsupported("resuming a job")

    def list_events(self, job_id: str, limit: int = 100) -> list[JobEvent]:
        """The latest `limit` events, oldest first."""
        response = self._call(lambda: self._client.fine_tuning.list_events(job_id))
        events = sorted(
            (_as_dict(event) for event in response.data),
            key=lambda event: unix_seconds(event.get("created_at")) or 0,
        )
        # Ids count from the oldest event, so they stay the same as new events arrive.
        mapped = [job_event(f"{job_id}-event-{n}", event) for n, event in enumerate(events)]
        return mapped[-limit:] if limit > 0 else []

    def list_checkpoints(self, job_id: str) -> list[JobCheckpoint]:
        response = self._call(lambda: self._client.fine_tuning.list_checkpoints(job_id))
        checkpoints = [job_checkpoint(job_id, _as_dict(item)) for item in response.data]
        return sorted(checkpoints, key=lambda checkpoint: checkpoint.step)

    # Models

    def chat(self, model: str, messages: list[dict], **options) -> Answer:
        sent = self._chat_options(options)
        completion = self._call(
            lambda: self._client.chat.completions.create(
                model=model, messages=_sdk_messages(messages), **sent
            )
        )
        if not completion.choices:
            raise TunelabError("provider_rejected", f"{PROVIDER} returned no answer for {model}.")
        choice = completion.choices[0]
        text = (choice.message.content if choice.message else None) or choice.text or ""
        usage = completion.usage
        return Answer(
            text=text,
            finish_reason=_finish(choice.finish_reason),
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            model=completion.model or model,
            tool_calls=tool_calls(choice.message),
        )

    def stream_chat(self, model: str, messages: list[dict], **options) -> ChatStream:
        sent = self._chat_options(options)
        # The request is made here, so a refusal (or a retried 429) comes before any delta.
        chunks = self._call(
            lambda: self._client.chat.completions.create(
                model=model, messages=_sdk_messages(messages), stream=True, **sent
            )
        )
        return chunk_stream(chunks, model, self._stream_error)

    def _chat_options(self, options: dict) -> dict:
        """The settings the caller gave, each of them one Together's chat API takes."""
        sent = self._answer_settings(options)
        if "parallel_tool_calls" in sent:
            raise self.unsupported_setting(
                "parallel_tool_calls", f" ({PROVIDER}'s chat API takes no such field)"
            )
        return sent

    def download_model(self, job_id: str, destination: Path, *, merged: bool = True) -> Path:
        """Stream the trained model (merged) or LoRA adapter, as Together packs it (an
        archive), into `destination`, which appears only once complete."""
        destination = Path(destination)
        check_output_path(destination, force=False)
        checkpoint = download_kind(self._retrieve_job_dict(job_id), merged)

        def fetch() -> Path:
            content = self._client.fine_tuning.with_streaming_response.content
            with (
                staged_write(destination, "wb") as (handle, staged),
                content(ft_id=job_id, checkpoint=checkpoint) as response,
            ):
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    handle.write(chunk)
            commit(staged, destination)
            return destination

        return self._call(fetch)

    # Plumbing

    def _retrieve_job_dict(self, job_id: str) -> dict:
        return _as_dict(self._call(lambda: self._client.fine_tuning.retrieve(job_id)))

    def _list_job_dicts(self) -> list[dict]:
        response = self._call(lambda: self._client.fine_tuning.list())
        jobs = [_as_dict(job) for job in response.data]
        return sorted(jobs, key=lambda job: unix_seconds(job.get("created_at")) or 0, reverse=True)

    def _call(
        self, call: Callable[[], T], *, before_retry: Callable[[], T | None] | None = None
    ) -> T:
        """`call()` as `HostedProvider._call` makes it, with the transport errors that escape
        the SDK retried, then reported, as its own connection errors are."""
        try:
            return super()._call(
                lambda: _transport_errors_as_connection_errors(call), before_retry=before_retry
            )
        except (ConnectionError, TimeoutError) as err:
            raise self._error(err) from None


def _finish(reason: str | None) -> str:
    """Together's reason an answer ended, in OpenAI's words (its `eos` is a stop)."""
    return reason if reason in ("length", "tool_calls") else "stop"


def _sdk_base_url(base_url: str | None) -> str | None:
    """Together documents `https://api.together.xyz/v1` for OpenAI-style clients, but the
    SDK's paths already begin with `/v1`; accept both forms."""
    if base_url is None:
        return None
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))


def _transport_errors_as_connection_errors(call: Callable[[], T]) -> T:
    """Raw httpx errors escape the SDK while a download streams and during an upload's PUT to
    storage; as `ConnectionError` they are retried like the SDK's own connection errors."""
    try:
        return call()
    except httpx.TransportError as err:
        raise ConnectionError(f"{type(err).__name__}: {err}") from err


def _unsupported(operation: str) -> TunelabError:
    return TunelabError(
        "unsupported_operation",
        f"the together provider does not support {operation}: {PROVIDER} has no such operation.",
        hint="cancel the job instead if it should stop",
    )


def _sdk_messages(messages: list[dict]) -> list[ChatCompletionMessageParam]:
    """OpenAI-style wire messages, passed on as the caller wrote them: the SDK's stubs admit
    only their TypedDicts, which a `dict` read from JSON cannot be checked against."""
    return cast("list[ChatCompletionMessageParam]", messages)


def _as_dict(model: together.BaseModel) -> dict:
    """An SDK object under the API's own field names, whichever SDK type it came as."""
    return model.to_dict(mode="json", warnings=False)


def _check_file_as_together_does(path: Path, purpose: str) -> None:
    """Together's own local check, run before uploading so a bad file fails fast."""
    report = together_lib.check_file(path, purpose=purpose)
    if not report["is_check_passed"]:
        raise TunelabError(
            "invalid_file",
            f"{PROVIDER} would refuse this file: {report['message']}",
            hint="run `tunelab validate` on it for the full list of problems",
            path=path,
            line=report.get("line_number"),
        )
