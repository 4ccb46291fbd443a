"""OpenAI's hosted fine-tuning (and any OpenAI-compatible server) as a tunelab provider.

A thin adapter over the official SDK: the SDK's own retries are off (`max_retries=0`) so
that `tunelab.providers.hosted.retry` applies, with a create's reconciliation between attempts.
OpenAI's statuses and objects are already tunelab's vocabulary, so mapping is mostly
copying; every answer field (logprobs, logit_bias, structured outputs, tools) passes through
as the caller wrote it, and comes back as tunelab's records (`openai_answers`). OpenAI
accepts no new fine-tuning jobs from 2027-01-06; a create refused for that reason says so
and points at the providers that still train.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import urlparse

from tunelab.errors import TunelabError
from tunelab.io import commit, staged_write
from tunelab.lazy import LazyModule
from tunelab.providers.base import (
    JOB_STATUSES,
    OPENAI_ANSWER_FIELDS,
    REQUEST_ID_KEY,
    ChatStream,
    JobCheckpoint,
    JobRequest,
    JobState,
    RemoteFile,
)
from tunelab.providers.hosted import http_limits, retry
from tunelab.providers.hosted.openai_answers import token_logprobs, tool_calls, whole_answer
from tunelab.providers.hosted.openai_chunks import chunk_stream
from tunelab.providers.hosted.service import HostedProvider, T
from tunelab.providers.methods import settings_from_method
from tunelab.providers.provider import CHAT, FILES, FINE_TUNING
from tunelab.providers.urls import check_base_url
from tunelab.types import Answer, JobEvent, Usage

KEY_VARIABLE = "OPENAI_API_KEY"
if TYPE_CHECKING:  # the SDK's own types, for the checker
    import openai
    from openai.types import FilePurpose
    from openai.types.chat import ChatCompletionMessageParam
else:  # the SDK loads when a call needs it, not at `tunelab --help`
    openai = LazyModule("openai")
OFFICIAL_HOST = "api.openai.com"
FINE_TUNING_CLOSES = date(2027, 1, 6)  # OpenAI's last day is the 5th
OTHER_PROVIDERS_HINT = (
    "train with `--provider local` (this machine) or `--provider together`; the same flags work"
)
HYPERPARAMETERS = {
    "supervised": ("n_epochs", "batch_size", "learning_rate_multiplier"),
    "dpo": ("n_epochs", "batch_size", "learning_rate_multiplier", "beta"),
    "reinforcement": (
        "n_epochs",
        "batch_size",
        "learning_rate_multiplier",
        "compute_multiplier",
        "eval_interval",
        "eval_samples",
        "reasoning_effort",
    ),
}
MAX_PAGES = 1000  # of up to 100 items: far more jobs or events than any account holds
UPLOAD_WAIT_LIMIT = 120.0  # seconds; OpenAI usually processes a file in a few
# A refusal that says fine-tuning itself is off for this account or model, as opposed to a
# bad request: "fine-tuning is not available for ...", "... does not support fine-tuning".
_FINE_TUNING = re.compile(r"fine[- ]?tun", re.IGNORECASE)
_UNAVAILABLE = re.compile(
    r"not available|unavailable|deprecat|not allowed|no longer|not supported|not support"
    r"|disabled|not enabled|not permitted|shut ?down|closed|retired|discontinued",
    re.IGNORECASE,
)


def register_providers(register) -> None:
    register(OpenAIProvider)


class OpenAIProvider(HostedProvider):
    """Jobs, files and chat on OpenAI or an OpenAI-compatible server."""

    name = "openai"
    title = "OpenAI"
    capabilities = frozenset({FINE_TUNING, CHAT, FILES})
    # Annotated as the base class has them, so that the compatible provider may clear them.
    key_variable: ClassVar[str | None] = KEY_VARIABLE
    official_hosts: ClassVar[tuple[str, ...]] = (OFFICIAL_HOST,)
    base_url_variable = "OPENAI_BASE_URL"
    # All of OpenAI's passed through, under its own names (not tunelab's own `grammar`).
    answer_fields = frozenset(OPENAI_ANSWER_FIELDS)

    def __init__(self, *, today: Callable[[], date] | None = None, **options) -> None:
        super().__init__(**options)
        self._today = today or (lambda: datetime.now(timezone.utc).date())
        self.base_url = str(self._client.base_url)
        self.on_official_host = _is_official(self.base_url)

    def _new_client(self, api_key: str, base_url: str | None) -> openai.OpenAI:
        if base_url is not None:  # also one read back from endpoints.json or the registry
            check_base_url(base_url)
        return openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=http_limits.request_timeout(),
            http_client=http_limits.bounded_http_client(),
        )

    def _sdk_error(self) -> type[Exception]:
        return openai.OpenAIError

    # Files

    def upload_file(self, path: Path, purpose: str = "fine-tune") -> RemoteFile:
        path = Path(path)
        if not path.is_file():
            raise TunelabError("file_not_found", f"{path} does not exist.", path=path)

        def upload() -> Any:
            with path.open("rb") as handle:  # reopened per attempt: a retry resends it all
                return self._client.files.create(
                    file=(path.name, handle), purpose=_sdk_purpose(purpose)
                )

        remote = self._wait_until_processed(self._call(upload))
        if remote.status == "error":
            raise TunelabError(
                "openai_file_rejected",
                f"OpenAI could not process {path.name} ({remote.id}): "
                f"{remote.status_details or 'no details given'}",
                hint=f"check the file with `tunelab validate {path}`",
                path=path,
            )
        return remote

    def download_file(self, file_id: str, destination: Path) -> RemoteFile:
        try:
            remote = _remote_file(self._call(partial(self._client.files.retrieve, file_id)))
            destination = Path(destination)
            with staged_write(destination, "wb") as (handle, staged):
                self._call(partial(self._download_to, file_id, handle))
            commit(staged, destination)
        except TunelabError as err:
            if err.code != "provider_not_found":
                raise
            raise TunelabError(
                "provider_file_gone",
                f"the file {file_id} is no longer on {self._where()} (deleted): {err.message}",
                hint="its jobs are still recorded; their data cannot be downloaded",
            ) from None
        return remote

    def _download_to(self, file_id: str, handle) -> None:
        """The file's content written to `handle` as it arrives (from the start on a retry)."""
        handle.seek(0)
        handle.truncate()
        with self._client.files.with_streaming_response.content(file_id) as response:
            for chunk in response.iter_bytes(1 << 20):
                handle.write(chunk)

    def _where(self) -> str:
        return "OpenAI" if self.on_official_host else f"the server at {self.base_url}"

    def _wait_until_processed(self, file: Any) -> RemoteFile:
        remote, waited, delay = _remote_file(file), 0.0, 0.5
        while remote.status not in ("processed", "error"):
            if waited >= UPLOAD_WAIT_LIMIT:
                raise TunelabError(
                    "openai_file_not_ready",
                    f"OpenAI had not processed {remote.filename} ({remote.id}) "
                    f"after {int(UPLOAD_WAIT_LIMIT)} s (status {remote.status}).",
                    hint="try again in a few minutes",
                )
            self.policy.sleep(delay)
            waited, delay = waited + delay, min(delay * 2, 10.0)
            remote = _remote_file(self._call(partial(self._client.files.retrieve, remote.id)))
        return remote

    # Jobs

    def create_job(self, request: JobRequest) -> JobState:
        kwargs = _create_arguments(request)
        request_id = request.metadata.get(REQUEST_ID_KEY)
        find_earlier = (lambda: self._find_job(request_id)) if request_id else None
        try:
            job = retry.call_with_retries(
                lambda: self._client.fine_tuning.jobs.create(**kwargs),
                policy=self.policy,
                before_retry=find_earlier,
            )
        except openai.OpenAIError as err:
            if self._says_fine_tuning_closed(err):
                raise self._closed_error(err) from None
            raise self._error(err) from None
        return job if isinstance(job, JobState) else _job_state(job)

    def _find_job(self, request_id: str) -> JobState | None:
        """The job an earlier attempt of this create made, if the server has it."""
        page = self._call(
            lambda: self._client.fine_tuning.jobs.list(
                limit=20, metadata={REQUEST_ID_KEY: request_id}
            )
        )
        for job in page.data:  # checked here too: a compatible server may ignore the filter
            if (getattr(job, "metadata", None) or {}).get(REQUEST_ID_KEY) == request_id:
                return _job_state(job)
        return None

    def _says_fine_tuning_closed(self, err: Exception) -> bool:
        status = getattr(err, "status_code", None)
        if status is None or not 400 <= status < 500 or status in (401, 429):
            return False
        if self.on_official_host and self._today() >= FINE_TUNING_CLOSES:
            return True
        text = _server_message(err)
        return bool(_FINE_TUNING.search(text) and _UNAVAILABLE.search(text))

    def _closed_error(self, err: Exception) -> TunelabError:
        detail = self._redact(_server_message(err))
        where = self._where()
        return TunelabError(
            "openai_fine_tuning_closed",
            f"{where} does not accept new fine-tuning jobs for this account or model "
            f"(OpenAI's fine-tuning platform takes no new jobs from 2027-01-06): {detail}",
            hint=OTHER_PROVIDERS_HINT,
        )

    def retrieve_job(self, job_id: str) -> JobState:
        return _job_state(self._call(lambda: self._client.fine_tuning.jobs.retrieve(job_id)))

    def list_jobs(self, limit: int = 20) -> list[JobState]:
        jobs = self._pages(lambda after: self._client.fine_tuning.jobs.list(**after), limit)
        states = [_job_state(job) for job in jobs]
        return sorted(states, key=lambda state: state.created_at or 0, reverse=True)

    def cancel_job(self, job_id: str) -> JobState:
        return _job_state(self._call(lambda: self._client.fine_tuning.jobs.cancel(job_id)))

    def pause_job(self, job_id: str) -> JobState:
        return _job_state(self._call(lambda: self._client.fine_tuning.jobs.pause(job_id)))

    def resume_job(self, job_id: str) -> JobState:
        return _job_state(self._call(lambda: self._client.fine_tuning.jobs.resume(job_id)))

    def list_events(self, job_id: str, limit: int = 100) -> list[JobEvent]:
        events = self._pages(
            lambda after: self._client.fine_tuning.jobs.list_events(job_id, **after), limit
        )
        newest_first = [_job_event(event) for event in events]
        return newest_first[::-1]

    def list_checkpoints(self, job_id: str) -> list[JobCheckpoint]:
        checkpoints = self._pages(
            lambda after: self._client.fine_tuning.jobs.checkpoints.list(job_id, **after),
            limit=None,
        )
        return sorted((_checkpoint(item) for item in checkpoints), key=lambda c: c.step)

    def download_model(self, job_id: str, destination: Path, *, merged: bool = True) -> Path:
        raise TunelabError(
            "unsupported_operation",
            f"OpenAI does not release the weights of fine-tuned models (job {job_id}).",
            hint="train with `--provider local` or `--provider together` to get "
            "downloadable weights",
        )

    # Chat

    def chat(self, model: str, messages: list[dict], **options) -> Answer:
        response = self._create_completion(model, messages, options)
        choice = response.choices[0]
        usage = response.usage
        return Answer(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
            model=response.model or model,
            logprobs=token_logprobs(choice.logprobs),
            tool_calls=tool_calls(choice.message),
        )

    def stream_chat(self, model: str, messages: list[dict], **options) -> ChatStream:
        # The request is made here, so a refusal (or a retried 429) comes before any delta.
        chunks = self._create_completion(
            model, messages, options, stream=True, stream_options={"include_usage": True}
        )
        response = getattr(chunks, "response", None)
        if response is not None and "json" in response.headers.get("content-type", ""):
            # A server that ignores `stream` answers whole: the answer is one delta.
            response.read()
            return ChatStream.of(whole_answer(response.json(), model))
        return chunk_stream(chunks, model, self._stream_error)

    def _create_completion(self, model: str, messages: list[dict], options: dict, **streaming):
        """One chat completion request with the caller's `options` (retried as `_call`
        retries); `streaming`: the SDK's stream arguments, for a stream of chunks."""
        sent = self._chat_options(**options)
        return self._call(
            lambda: self._client.chat.completions.create(
                model=model,
                messages=_sdk_messages(messages),
                timeout=http_limits.request_timeout(http_limits.ANSWER_SECONDS),
                **streaming,
                **sent,
            )
        )

    def _chat_options(self, **options) -> dict:
        """The settings the caller gave, under this server's names."""
        sent = self._answer_settings(options)
        # OpenAI deprecated max_tokens; compatible servers do not all know its successor.
        if self.on_official_host and "max_tokens" in sent:
            sent["max_completion_tokens"] = sent.pop("max_tokens")
        return sent

    # Plumbing

    def _call(
        self, call: Callable[[], T], *, before_retry: Callable[[], T | None] | None = None
    ) -> T:
        try:
            return super()._call(call, before_retry=before_retry)
        except json.JSONDecodeError as err:  # a 200 whose JSON is cut short, or empty
            raise TunelabError(
                "provider_bad_response",
                f"{self._where()} answered with JSON that cannot be read "
                f"({err.msg}, at byte {err.pos}).",
                hint="check that the base URL is an OpenAI-compatible API (it usually ends in /v1)",
            ) from None

    def _pages(self, fetch: Callable[[dict], Any], limit: int | None) -> list[Any]:
        """Items of a cursor-paged list, page by page with `after`, up to `limit`."""
        items: list[Any] = []
        cursor: dict = {}
        seen: set[str] = set()  # cursors asked for: a server repeating one would loop forever
        while limit is None or len(items) < limit:
            size = 100 if limit is None else min(100, limit - len(items))
            page = self._call(partial(fetch, {**cursor, "limit": size}))
            items.extend(page.data)
            if not page.data or not page.has_more:
                break
            after = page.data[-1].id
            if after in seen:
                raise self._endless_pages(f"ended two pages with the same item {after}")
            if len(seen) >= MAX_PAGES:
                raise self._endless_pages(f"still had more after {MAX_PAGES} pages")
            seen.add(after)
            cursor = {"after": after}
        return items if limit is None else items[:limit]

    def _endless_pages(self, what: str) -> TunelabError:
        return TunelabError(
            "provider_endless_pages",
            f"{self._where()} {what} (`has_more` stays true); tunelab stopped listing.",
            hint="the server's pagination is broken: report it to whoever runs it",
        )


def _is_official(base_url: str | None) -> bool:
    host = urlparse(base_url).hostname if base_url else OFFICIAL_HOST
    return host == OFFICIAL_HOST or (host or "").endswith("." + OFFICIAL_HOST)


def _create_arguments(request: JobRequest) -> dict:
    allowed = HYPERPARAMETERS.get(request.method)
    if allowed is None:
        raise TunelabError(
            "unsupported_method",
            f"OpenAI fine-tunes with the methods {', '.join(HYPERPARAMETERS)}, "
            f"not {request.method!r}.",
            hint="use --training-method supervised, dpo or reinforcement",
        )
    hyperparameters = {k: v for k, v in request.hyperparameters.items() if v is not None}
    unknown = sorted(set(hyperparameters) - set(allowed))
    if unknown:
        names = ", ".join(unknown)
        raise TunelabError(
            "unsupported_hyperparameter",
            f"OpenAI does not accept the hyperparameter(s) {names} for {request.method} "
            f"fine-tuning; it takes {', '.join(allowed)}.",
            hint=f"`--provider local` or `--provider together` accepts {names}",
        )
    method: dict = {"type": request.method}
    section: dict = {"hyperparameters": hyperparameters} if hyperparameters else {}
    if request.grader is not None:  # reinforcement: the grader scores the answers
        section["grader"] = request.grader
    if section:
        method[request.method] = section
    optional = {
        "validation_file": request.validation_file,
        "suffix": request.suffix,
        "seed": request.seed,
        "metadata": dict(request.metadata) or None,
    }
    return {
        "model": request.model,
        "training_file": request.training_file,
        "method": method,
        **{name: value for name, value in optional.items() if value is not None},
    }


def _server_message(err: Exception) -> str:
    body = getattr(err, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])
    return str(getattr(err, "message", None) or err)


def _plain(value: Any) -> dict:
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    return {k: v for k, v in dict(value).items() if v is not None}


def _remote_file(file: Any) -> RemoteFile:
    return RemoteFile(
        id=file.id,
        filename=getattr(file, "filename", None) or "",
        bytes=getattr(file, "bytes", None) or 0,
        purpose=getattr(file, "purpose", None) or "fine-tune",
        created_at=getattr(file, "created_at", None),
        # A compatible server may leave out the (deprecated) status: the file is ready.
        status=getattr(file, "status", None) or "processed",
        status_details=getattr(file, "status_details", None),
    )


def _resolved_hyperparameters(job: Any) -> dict:
    """The job's settings under tunelab's names: its method's hyperparameters, and the
    method itself when it is not supervised (`training_method`, DPO's `dpo_beta`)."""
    method = getattr(job, "method", None)
    if method is not None and getattr(method, "type", None):
        chosen = getattr(method, method.type, None)
        if chosen is not None and getattr(chosen, "hyperparameters", None) is not None:
            return settings_from_method(str(method.type), _plain(chosen.hyperparameters))
    return _plain(getattr(job, "hyperparameters", None))


def _job_grader(job: Any) -> dict | None:
    """A reinforcement job's grader (`method.reinforcement.grader`), as OpenAI shows it."""
    method = getattr(job, "method", None)
    section = getattr(method, "reinforcement", None) if method is not None else None
    grader = getattr(section, "grader", None) if section is not None else None
    return _plain(grader) or None


def _job_state(job: Any) -> JobState:
    raw = str(job.status)
    error = getattr(job, "error", None)
    return JobState(
        id=job.id,
        # Unknown words are treated as still in progress, so callers keep polling.
        status=raw if raw in JOB_STATUSES else "running",
        raw_status=raw,
        model=job.model,
        fine_tuned_model=getattr(job, "fine_tuned_model", None),
        created_at=getattr(job, "created_at", None),
        finished_at=getattr(job, "finished_at", None),
        trained_tokens=getattr(job, "trained_tokens", None),
        estimated_finish=getattr(job, "estimated_finish", None),
        error_code=(getattr(error, "code", None) or None) if error else None,
        error_message=(getattr(error, "message", None) or None) if error else None,
        hyperparameters=_resolved_hyperparameters(job),
        training_file=getattr(job, "training_file", None),
        validation_file=getattr(job, "validation_file", None),
        suffix=getattr(job, "suffix", None),
        metadata=dict(getattr(job, "metadata", None) or {}),
        grader=_job_grader(job),
    )


def _job_event(event: Any) -> JobEvent:
    data = getattr(event, "data", None)
    return JobEvent(
        id=event.id,
        created_at=event.created_at,
        message=event.message,
        level=getattr(event, "level", None) or "info",
        type=getattr(event, "type", None) or "message",
        data=data if isinstance(data, dict) and data else None,
    )


def _checkpoint(item: Any) -> JobCheckpoint:
    return JobCheckpoint(
        id=item.id,
        step=item.step_number,
        created_at=getattr(item, "created_at", None),
        fine_tuned_model_checkpoint=getattr(item, "fine_tuned_model_checkpoint", None),
        metrics=_plain(getattr(item, "metrics", None)),
    )


# The SDK's stubs type these arguments more narrowly than the servers this provider talks to
# take them: the values go on as the caller wrote them, and the server judges them.
def _sdk_messages(messages: list[dict]) -> list[ChatCompletionMessageParam]:
    """OpenAI's wire messages, which the stubs admit only as their TypedDicts (a `dict` read
    from JSON, possibly with fields a compatible server adds, cannot be checked against them)."""
    return cast("list[ChatCompletionMessageParam]", messages)


def _sdk_purpose(purpose: str) -> FilePurpose:
    """A file's purpose, which the stubs limit to OpenAI's own list (a compatible server may
    take others)."""
    return cast("FilePurpose", purpose)
