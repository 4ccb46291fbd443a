"""Together AI as a provider, through the official `together` SDK.

Together speaks its own vocabulary (statuses such as `pending` or `user_error`, `lora_r`, an
absolute learning rate, ISO timestamps, no job metadata); this module maps it onto tunelab's
plain objects. The SDK's own retries are off: `tunelab.providers.retry` decides, so that a
retried create can first look for the job its failed attempt may have made.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar, get_args

import httpx
import together
from together.lib import check_file
from together.types import FilePurpose

from tunelab.errors import TunelabError
from tunelab.io import check_output_path, commit, staged_write
from tunelab.providers.base import (
    TERMINAL_STATUSES,
    ChatResult,
    JobCheckpoint,
    JobEvent,
    JobRequest,
    JobState,
    RemoteFile,
)
from tunelab.providers.provider import CHAT, FILES, FINE_TUNING, MODEL_DOWNLOAD, Provider
from tunelab.providers.retry import RetryPolicy, call_with_retries, provider_error

T = TypeVar("T")
PROVIDER = "Together AI"
KEY_VARIABLE = "TOGETHER_API_KEY"
PLACEHOLDER_KEY = "tunelab-no-key"
# Reconciliation compares Together's clock with ours; a job stamped a little before our first
# attempt began is still the one that attempt made.
CLOCK_SKEW_SECONDS = 10
DOWNLOAD_CHUNK_BYTES = 1 << 20

_STATUSES = {
    "pending": "queued",
    "queued": "queued",
    "running": "running",
    "compressing": "running",
    "uploading": "running",
    # Together is still stopping the job; calling it cancelled would tell pollers to stop
    # watching a job that is still running (and may still finish).
    "cancel_requested": "running",
    "cancelled": "cancelled",
    "completed": "succeeded",
    "error": "failed",
    "user_error": "failed",
}

# tunelab's hyperparameter names (OpenAI's or the engine's) → Together's create() arguments.
_HYPERPARAMETERS = {
    "n_epochs": "n_epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "n_checkpoints": "n_checkpoints",
    "n_evals": "n_evals",
    "warmup_ratio": "warmup_ratio",
    "train_on_inputs": "train_on_inputs",
    "max_seq_length": "max_seq_length",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "lr_scheduler_type": "lr_scheduler_type",
    "min_lr_ratio": "min_lr_ratio",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "lora_rank": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "lora_trainable_modules",
    "beta": "dpo_beta",
}
_LORA_KEYS = frozenset({"lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules"})
# OpenAI's names whose "auto" just means "let the provider choose", which Together does.
_OPENAI_AUTO_KEYS = frozenset({"learning_rate_multiplier"})


def register_providers(register) -> None:
    register(TogetherProvider)


class TogetherProvider(Provider):
    """Fine-tuning, chat and downloads on Together AI."""

    name = "together"
    title = "Together AI"
    capabilities = frozenset({FINE_TUNING, CHAT, FILES, MODEL_DOWNLOAD})
    key_variable = KEY_VARIABLE
    official_hosts = ("api.together.xyz", "api.together.ai")

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        key_variable: str | None = None,
        policy: RetryPolicy | None = None,
        client: together.Together | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.base_url, self.endpoint_key_variable = base_url, key_variable
        if client is None:
            # No key for strangers; the SDK refuses to start without one, so a placeholder.
            key = api_key or self.endpoint_key(base_url, key_variable) or PLACEHOLDER_KEY
            client = together.Together(api_key=key, base_url=_sdk_base_url(base_url), max_retries=0)
        self._client = client

    def __repr__(self) -> str:
        return f"TogetherProvider(base_url={str(self._client.base_url)!r})"

    # Files

    def upload_file(self, path: Path, purpose: str = "fine-tune") -> RemoteFile:
        path = Path(path)
        if purpose not in get_args(FilePurpose):
            raise TunelabError(
                "unsupported_purpose",
                f"{PROVIDER} does not take files for '{purpose}'.",
                hint=f"use one of: {', '.join(get_args(FilePurpose))}",
            )
        _check_file_as_together_does(path, purpose)
        uploaded = self._call(lambda: self._client.files.upload(path, purpose=purpose, check=False))
        return _remote_file(_as_dict(uploaded))

    # Jobs

    def create_job(self, request: JobRequest) -> JobState:
        """Create a job; `request.metadata` is not sent (Together jobs have none)."""
        arguments = _create_arguments(request)
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
            return _job_state(_as_dict(job))

        return self._call(create, before_retry=lambda: self._find_created_job(request, started))

    def _find_created_job(self, request: JobRequest, since: float) -> JobState | None:
        """The job a failed create attempt made after all, if Together lists one."""
        for job in self._list_job_dicts():
            created_at = _unix(job.get("created_at"))
            if (
                job.get("training_file") == request.training_file
                and job.get("model") == request.model
                and (job.get("suffix") or None) == (request.suffix or None)
                and created_at is not None
                and created_at >= since - CLOCK_SKEW_SECONDS
            ):
                return _job_state(job)
        return None

    def retrieve_job(self, job_id: str) -> JobState:
        return _job_state(self._retrieve_job_dict(job_id))

    def list_jobs(self, limit: int = 20) -> list[JobState]:
        """Jobs, newest first."""
        return [_job_state(job) for job in self._list_job_dicts()[:limit]]

    def cancel_job(self, job_id: str) -> JobState:
        return _job_state(_as_dict(self._call(lambda: self._client.fine_tuning.cancel(job_id))))

    def pause_job(self, job_id: str) -> JobState:
        raise _unsupported("pausing a job")

    def resume_job(self, job_id: str) -> JobState:
        raise _unsupported("resuming a job")

    def list_events(self, job_id: str, limit: int = 100) -> list[JobEvent]:
        """The latest `limit` events, oldest first."""
        response = self._call(lambda: self._client.fine_tuning.list_events(job_id))
        events = sorted(
            (_as_dict(event) for event in response.data),
            key=lambda event: _unix(event.get("created_at")) or 0,
        )
        # Ids count from the oldest event, so they stay the same as new events arrive.
        mapped = [_job_event(f"{job_id}-event-{n}", event) for n, event in enumerate(events)]
        return mapped[-limit:] if limit > 0 else []

    def list_checkpoints(self, job_id: str) -> list[JobCheckpoint]:
        response = self._call(lambda: self._client.fine_tuning.list_checkpoints(job_id))
        checkpoints = [_job_checkpoint(job_id, _as_dict(item)) for item in response.data]
        return sorted(checkpoints, key=lambda checkpoint: checkpoint.step)

    # Models

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
    ) -> ChatResult:
        options = {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": stop,
            "seed": seed,
        }
        sent = {name: value for name, value in options.items() if value is not None}
        completion = self._call(
            lambda: self._client.chat.completions.create(model=model, messages=messages, **sent)
        )
        if not completion.choices:
            raise TunelabError("provider_rejected", f"{PROVIDER} returned no answer for {model}.")
        choice = completion.choices[0]
        text = (choice.message.content if choice.message else None) or choice.text or ""
        usage = completion.usage
        return ChatResult(
            text=text,
            model=completion.model or model,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def download_model(self, job_id: str, destination: Path, *, merged: bool = True) -> Path:
        """Stream the trained model (merged) or LoRA adapter, as Together packs it (an
        archive), into `destination`, which appears only once complete."""
        destination = Path(destination)
        check_output_path(destination, force=False)
        checkpoint = _download_kind(self._retrieve_job_dict(job_id), merged)

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
        return sorted(jobs, key=lambda job: _unix(job.get("created_at")) or 0, reverse=True)

    def _call(
        self, call: Callable[[], T], *, before_retry: Callable[[], T | None] | None = None
    ) -> T:
        """`call()` under the retry policy, with SDK errors as `TunelabError`."""
        try:
            return call_with_retries(
                lambda: _transport_errors_as_connection_errors(call),
                policy=self.policy,
                before_retry=before_retry,
            )
        except TunelabError:
            raise
        except (together.APIError, ConnectionError, TimeoutError) as err:
            mapped = provider_error(err, PROVIDER, KEY_VARIABLE)
            # `provider_error` redacts the key held in the environment; this one may have
            # been passed in directly. `from None`: the SDK's exception may quote it.
            key = self._client.api_key
            message = mapped.message.replace(key, "***") if key else mapped.message
            raise TunelabError(mapped.code, message, mapped.hint) from None


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


def _as_dict(model: together.BaseModel) -> dict:
    """An SDK object under the API's own field names, whichever SDK type it came as."""
    return model.to_dict(mode="json", warnings=False)


def _check_file_as_together_does(path: Path, purpose: str) -> None:
    """Together's own local check, run before uploading so a bad file fails fast."""
    report = check_file(path, purpose=purpose)
    if not report["is_check_passed"]:
        raise TunelabError(
            "invalid_file",
            f"{PROVIDER} would refuse this file: {report['message']}",
            hint="run `tunelab validate` on it for the full list of problems",
            path=path,
            line=report.get("line_number"),
        )


def _remote_file(data: dict) -> RemoteFile:
    processing = data.get("processing_status")
    report = data.get("validation_report") or {}
    if processing in (None, "COMPLETED"):
        status = "processed"
    elif processing in ("FAILED", "INVALID_FORMAT"):
        status = "error"
    else:
        status = "uploaded"
    return RemoteFile(
        id=data["id"],
        filename=data.get("filename", ""),
        bytes=data.get("bytes", 0),
        purpose=data.get("purpose", "fine-tune"),
        created_at=data.get("created_at"),
        status=status,
        status_details=report.get("error"),
    )


def _create_arguments(request: JobRequest) -> dict:
    """Keyword arguments for the SDK's `fine_tuning.create`; refuses what it cannot send."""
    if request.method not in ("supervised", "dpo"):
        raise TunelabError(
            "unsupported_method",
            f"{PROVIDER} has no '{request.method}' training method.",
            hint="use method 'supervised' or 'dpo'",
        )
    hyperparameters = dict(request.hyperparameters)
    training_type = hyperparameters.pop("training_type", "lora")
    if training_type not in ("lora", "full"):
        raise _unsupported_hyperparameter(
            "training_type", f"it offers no '{training_type}' training", "use 'lora' or 'full'"
        )
    arguments: dict = {
        "model": request.model,
        "training_file": request.training_file,
        "validation_file": request.validation_file or "",
        "suffix": request.suffix,
        "random_seed": request.seed,
        "lora": training_type == "lora",
        "training_method": "dpo" if request.method == "dpo" else "sft",
    }
    for key, value in hyperparameters.items():
        if key in _OPENAI_AUTO_KEYS and value == "auto":
            continue
        _check_supported(key, request.method, training_type)
        if value != "auto":  # "auto" leaves the choice to Together (batch size "max")
            arguments[_HYPERPARAMETERS[key]] = value
    modules = arguments.get("lora_trainable_modules")
    if isinstance(modules, (list, tuple)):
        arguments["lora_trainable_modules"] = ",".join(modules)
    if arguments["training_method"] == "sft":
        arguments.setdefault("train_on_inputs", "auto")
    if request.validation_file and "n_evals" not in arguments:
        # Together evaluates only when asked (n_evals defaults to 0); OpenAI always reports a
        # validation loss, so evaluate once per epoch as a trainer's "epoch" strategy does.
        epochs = arguments.get("n_epochs")
        arguments["n_evals"] = epochs if isinstance(epochs, int) else 1
    return arguments


def _check_supported(key: str, method: str, training_type: str) -> None:
    if key == "learning_rate_multiplier":
        raise _unsupported_hyperparameter(
            key,
            "it is OpenAI's; Together takes an absolute learning rate",
            "pass learning_rate instead (Together's default is 1e-05)",
        )
    if key not in _HYPERPARAMETERS:
        raise _unsupported_hyperparameter(
            key, "Together has no such setting", f"use one of: {', '.join(_HYPERPARAMETERS)}"
        )
    if key in _LORA_KEYS and training_type == "full":
        raise _unsupported_hyperparameter(
            key, "it applies to LoRA only", "drop it, or use training_type 'lora'"
        )
    if key == "beta" and method != "dpo":
        raise _unsupported_hyperparameter(key, "it applies to DPO only", "use method 'dpo'")


def _unsupported_hyperparameter(key: str, why: str, hint: str) -> TunelabError:
    return TunelabError(
        "unsupported_hyperparameter",
        f"{PROVIDER} cannot take hyperparameter '{key}': {why}.",
        hint=hint,
    )


def _job_state(job: dict) -> JobState:
    raw_status = str(job.get("status") or "")
    # An unknown word is most likely a new in-progress stage; calling it terminal could make
    # tunelab stop watching a job that is still training. raw_status shows the word.
    status = _STATUSES.get(raw_status, "running")
    failed = status == "failed"
    progress = job.get("progress") or {}
    estimated_finish = None
    if progress.get("estimate_available") and status not in TERMINAL_STATUSES:
        estimated_finish = int(time.time() + progress.get("seconds_remaining", 0))
    return JobState(
        id=job["id"],
        status=status,
        raw_status=raw_status,
        model=job.get("model") or "",
        # As in OpenAI's jobs: the model exists (and can be used) once the job succeeded.
        fine_tuned_model=job.get("model_output_name") if status == "succeeded" else None,
        created_at=_unix(job.get("created_at")),
        # Together keeps no finish time; a finished job's last update is when it finished.
        finished_at=_unix(job.get("updated_at")) if status in TERMINAL_STATUSES else None,
        trained_tokens=job.get("token_count"),
        estimated_finish=estimated_finish,
        error_code=raw_status if failed else None,
        error_message=_error_message(job) if failed else None,
        hyperparameters=_resolved_hyperparameters(job),
        training_file=job.get("training_file"),
        validation_file=job.get("validation_file") or None,
        suffix=job.get("suffix") or None,
    )


def _error_message(job: dict) -> str | None:
    error = job.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    if error:
        return str(error)
    for event in reversed(job.get("events") or []):
        if isinstance(event, dict) and (
            str(event.get("type") or "").lower() in ("job_error", "job_user_error")
            or _event_level(event.get("level")) == "error"
        ):
            return event.get("message") or None
    return None


def _resolved_hyperparameters(job: dict) -> dict:
    """What Together resolved, under tunelab's names."""
    names = ("n_epochs", "batch_size", "learning_rate", "n_checkpoints", "n_evals")
    resolved = {name: job[name] for name in (*names, "warmup_ratio") if job.get(name) is not None}
    training_type = job.get("training_type") or {}
    if training_type.get("type") == "Lora":
        resolved["training_type"] = "lora"
        for ours, theirs in _HYPERPARAMETERS.items():
            if ours in _LORA_KEYS and training_type.get(theirs) is not None:
                resolved[ours] = training_type[theirs]
    elif training_type.get("type") in ("Full", ""):
        resolved["training_type"] = "full"
    method = job.get("training_method") or {}
    train_on_inputs = method.get("train_on_inputs", job.get("train_on_inputs"))
    if train_on_inputs is not None:
        resolved["train_on_inputs"] = train_on_inputs
    if method.get("dpo_beta") is not None:
        resolved["beta"] = method["dpo_beta"]
    return resolved


def _job_event(event_id: str, event: dict) -> JobEvent:
    details = ("type", "step", "total_steps", "checkpoint_path", "token_count", "wandb_url")
    data = {name: event[name] for name in details if event.get(name) is not None}
    return JobEvent(
        id=event_id,
        created_at=_unix(event.get("created_at")) or 0,
        message=event.get("message") or "",
        level=_event_level(event.get("level")),
        data=data or None,
    )


def _event_level(level: object) -> str:
    word = str(level or "").lower()  # also "legacy_iwarning", and the SDK's older "Error"
    if "error" in word:
        return "error"
    return "warn" if "warning" in word else "info"


def _job_checkpoint(job_id: str, item: dict) -> JobCheckpoint:
    step = int(item.get("step") or 0)
    kind = item.get("checkpoint")
    # `job_id:step` is how Together names a checkpoint to continue training from.
    checkpoint_id = f"{job_id}:{step}" if kind != "adapter" else f"{job_id}:{step}:adapter"
    return JobCheckpoint(
        id=checkpoint_id,
        step=step,
        created_at=_unix(item.get("created_at")),
        fine_tuned_model_checkpoint=item.get("object_name") or item.get("path"),
    )


def _download_kind(job: dict, merged: bool) -> str:
    """Together's `checkpoint` for the final weights, as its own CLI chooses it."""
    if job.get("status") != "completed":
        raise TunelabError(
            "job_not_finished",
            f"job {job.get('id')} is {job.get('status')}; only a completed job has weights.",
            hint="wait until it has succeeded",
        )
    if (job.get("training_type") or {}).get("type") in ("Full", ""):
        if not merged:
            raise TunelabError(
                "adapter_unavailable",
                f"job {job.get('id')} trained all weights; it has no separate adapter.",
                hint="download the merged model instead",
            )
        return "model_output_path"
    return "merged" if merged else "adapter"


def _unix(value: object) -> int | None:
    """Unix seconds from Together's ISO timestamps (UTC; any number of fraction digits)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip().replace("Z", "+00:00")
    # Python 3.10's fromisoformat takes exactly 3 or 6 fraction digits.
    text = re.sub(r"\.(\d+)", lambda match: "." + match.group(1)[:6].ljust(6, "0"), text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())
