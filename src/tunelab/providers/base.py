"""What every provider offers, in OpenAI's vocabulary.

A provider is a thin adapter over one place that trains models (this machine, Together AI,
OpenAI or any OpenAI-compatible service). It speaks in the plain objects below and maps its
own statuses onto OpenAI's, keeping the raw value beside them. It knows nothing of the
registry: `tunelab.jobs` records what providers return.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

JobStatus = Literal[
    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
]
JOB_STATUSES: tuple[str, ...] = (
    "validating_files",
    "queued",
    "running",
    "paused",
    "succeeded",
    "failed",
    "cancelled",
)
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# The metadata key that lets a retried create find the job its first attempt made.
REQUEST_ID_KEY = "tunelab_request_id"


@dataclass
class RemoteFile:
    """A file the provider holds (OpenAI's file object, trimmed)."""

    id: str
    filename: str
    bytes: int
    purpose: str
    created_at: int | None = None
    status: str = "processed"  # "uploaded", "processed" or "error"
    status_details: str | None = None


@dataclass
class JobRequest:
    """What to train, in OpenAI's terms; file ids are the provider's own.

    `hyperparameters` uses OpenAI's names (`n_epochs`, `batch_size`,
    `learning_rate_multiplier`; a value or "auto") plus the engine's where a provider has
    them (`training_type` "lora"|"full", `lora_rank`, `lora_alpha`, `lora_dropout`,
    `lora_target_modules`, `learning_rate`, `warmup_ratio`, `n_checkpoints`,
    `train_on_inputs`, ...). A provider that cannot honour one raises `TunelabError`
    ("unsupported_hyperparameter") naming it. `method` is OpenAI's: "supervised" or "dpo".
    """

    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict = field(default_factory=dict)
    method: str = "supervised"
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class JobState:
    """A provider's view of one job at one moment. Times are Unix seconds."""

    id: str  # the provider's job id
    status: str  # one of JOB_STATUSES
    raw_status: str  # the provider's own word for it
    model: str
    fine_tuned_model: str | None = None
    created_at: int | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    estimated_finish: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    hyperparameters: dict = field(default_factory=dict)  # as the provider resolved them
    training_file: str | None = None
    validation_file: str | None = None
    suffix: str | None = None
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class JobEvent:
    id: str
    created_at: int
    message: str
    level: str = "info"  # "info", "warn" or "error"
    type: str = "message"  # "message" or "metrics"
    data: dict | None = None


@dataclass
class JobCheckpoint:
    id: str
    step: int
    created_at: int | None = None
    fine_tuned_model_checkpoint: str | None = None  # a model name or a local path
    metrics: dict = field(default_factory=dict)


@dataclass
class ChatResult:
    """One answer to a chat, with OpenAI's usage counts."""

    text: str
    model: str
    finish_reason: str = "stop"  # "stop" or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Provider(Protocol):
    """The operations tunelab needs from a place that trains and serves models.

    Methods a provider does not offer raise `TunelabError("unsupported_operation", ...)`
    saying which provider does. Every method that calls a remote service retries 429, 5xx
    and connection errors (see `tunelab.providers.retry`) and raises `TunelabError` for the
    rest; no message ever contains an API key.
    """

    name: str

    def upload_file(self, path: Path, purpose: str = "fine-tune") -> RemoteFile: ...

    def create_job(self, request: JobRequest) -> JobState:
        """Create a job. Retries never make a second job: before creating again, the
        provider looks for a job carrying `request.metadata[REQUEST_ID_KEY]` (or, where
        jobs have no metadata, the same files, model and suffix created since the first
        attempt) and returns it."""
        ...

    def retrieve_job(self, job_id: str) -> JobState: ...

    def list_jobs(self, limit: int = 20) -> list[JobState]: ...

    def cancel_job(self, job_id: str) -> JobState: ...

    def pause_job(self, job_id: str) -> JobState: ...

    def resume_job(self, job_id: str) -> JobState: ...

    def list_events(self, job_id: str, limit: int = 100) -> list[JobEvent]:
        """The job's events, oldest first."""
        ...

    def list_checkpoints(self, job_id: str) -> list[JobCheckpoint]: ...

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
    ) -> ChatResult: ...

    def download_model(self, job_id: str, destination: Path, *, merged: bool = True) -> Path:
        """Fetch the trained weights (or adapter) into `destination`; where offered."""
        ...
