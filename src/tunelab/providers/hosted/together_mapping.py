"""Together AI's vocabulary in tunelab's: statuses, hyperparameter names, jobs, events,
checkpoints and files mapped onto the plain objects of `tunelab.providers.base`.

Together speaks its own words (statuses such as `pending` or `user_error`, `lora_r`, an
absolute learning rate, ISO timestamps, no job metadata); the provider in
`together_provider.py` calls the SDK and hands what it gets to these functions.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Literal

from tunelab.errors import TunelabError
from tunelab.providers.base import (
    TERMINAL_STATUSES,
    JobCheckpoint,
    JobRequest,
    JobState,
    RemoteFile,
)
from tunelab.types import JobEvent

PROVIDER = "Together AI"
# Together's names for what a finished job's download holds.
DownloadKind = Literal["merged", "adapter", "model_output_path"]

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


def remote_file(data: dict) -> RemoteFile:
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


def create_arguments(request: JobRequest) -> dict:
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


def job_state(job: dict) -> JobState:
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
        created_at=unix_seconds(job.get("created_at")),
        # Together keeps no finish time; a finished job's last update is when it finished.
        finished_at=unix_seconds(job.get("updated_at")) if status in TERMINAL_STATUSES else None,
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
    if method.get("method") == "dpo":  # the training method under TrainConfig's names
        resolved["training_method"] = "dpo"
    if method.get("dpo_beta") is not None:
        resolved["dpo_beta"] = method["dpo_beta"]
    return resolved


def job_event(event_id: str, event: dict) -> JobEvent:
    details = ("type", "step", "total_steps", "checkpoint_path", "token_count", "wandb_url")
    data = {name: event[name] for name in details if event.get(name) is not None}
    return JobEvent(
        id=event_id,
        created_at=unix_seconds(event.get("created_at")) or 0,
        message=event.get("message") or "",
        level=_event_level(event.get("level")),
        data=data or None,
    )


def _event_level(level: object) -> str:
    word = str(level or "").lower()  # also "legacy_iwarning", and the SDK's older "Error"
    if "error" in word:
        return "error"
    return "warn" if "warning" in word else "info"


def job_checkpoint(job_id: str, item: dict) -> JobCheckpoint:
    step = int(item.get("step") or 0)
    kind = item.get("checkpoint")
    # `job_id:step` is how Together names a checkpoint to continue training from.
    checkpoint_id = f"{job_id}:{step}" if kind != "adapter" else f"{job_id}:{step}:adapter"
    return JobCheckpoint(
        id=checkpoint_id,
        step=step,
        created_at=unix_seconds(item.get("created_at")),
        fine_tuned_model_checkpoint=item.get("object_name") or item.get("path"),
    )


def download_kind(job: dict, merged: bool) -> DownloadKind:
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


def unix_seconds(value: object) -> int | None:
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
