"""What every provider offers, in OpenAI's vocabulary.

A provider (`tunelab.providers.provider.Provider`) is a thin adapter over one place that
trains or serves models (this machine, Together AI, OpenAI, Anthropic or any
OpenAI-compatible service). It speaks in the plain objects below and maps its own statuses
onto OpenAI's, keeping the raw value beside them. Hosted providers know nothing of the
registry: `tunelab.providers.jobs` records what they return.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field

from tunelab.types import Answer

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
    ("unsupported_hyperparameter") naming it. `method` is OpenAI's: "supervised", "dpo" or
    "reinforcement" (with its `grader`).
    """

    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict = field(default_factory=dict)
    method: str = "supervised"
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    grader: dict | None = None  # reinforcement: OpenAI's grader definition


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
    grader: dict | None = None  # a reinforcement job's: OpenAI's grader definition

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class JobCheckpoint:
    id: str
    step: int
    created_at: int | None = None
    fine_tuned_model_checkpoint: str | None = None  # a model name or a local path
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ChatOptions:
    """A chat request's generation settings, under OpenAI's names; None where the caller left
    the provider's default. `n` answers are asked for.

    The answer fields (`ANSWER_FIELDS`: `logprobs` with `top_logprobs`, `logit_bias`,
    `response_format`, `tools`, and tunelab's own `grammar`) are honoured only by providers
    that declare them (`Provider.answer_fields`); the server
    refuses them by name for the others."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias), OpenAI's -100..100
    # Structured outputs and tools, as OpenAI's request has them (None: not asked for).
    response_format: dict | None = None  # {"type": "json_object"} or "json_schema"
    tools: tuple[dict, ...] = ()
    tool_choice: str | dict | None = None  # "auto", "none", "required", a named function
    parallel_tool_calls: bool | None = None
    # tunelab's own: a Lark grammar (llguidance's dialect) the answer must follow.
    grammar: str | None = None

    def settings(self) -> dict:
        """The settings as `Provider.chat`'s keywords (None: the provider's default); the
        answer fields only where given."""
        settings: dict = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop) or None,
            "seed": self.seed,
        }
        if self.logprobs:
            settings.update(logprobs=True, top_logprobs=self.top_logprobs)
        if self.logit_bias:
            settings["logit_bias"] = {str(token): bias for token, bias in self.logit_bias}
        if self.structured:
            settings["response_format"] = self.response_format
        if self.tools:
            settings["tools"] = list(self.tools)
            given = {
                "tool_choice": self.tool_choice,
                "parallel_tool_calls": self.parallel_tool_calls,
            }
            settings.update({name: value for name, value in given.items() if value is not None})
        if self.grammar is not None:
            settings["grammar"] = self.grammar
        return settings

    def fields_used(self) -> list[str]:
        """The answer fields this request uses (`ANSWER_FIELDS`' names)."""
        used = {
            "logprobs": self.logprobs,
            "logit_bias": bool(self.logit_bias),
            "response_format": self.structured,
            "tools": bool(self.tools),
            "grammar": self.grammar is not None,
        }
        return [name for name in ANSWER_FIELDS if used[name]]

    @property
    def structured(self) -> bool:
        """Whether the answer must be JSON (`response_format` other than text)."""
        return (self.response_format or {}).get("type", "text") != "text"


# Request fields beyond the sampling settings that only some providers honour (`tools`
# stands for `tool_choice` and `parallel_tool_calls` too): OpenAI's, then tunelab's own
# `grammar` (constrained decoding, which only this machine's engine does).
OPENAI_ANSWER_FIELDS = ("logprobs", "logit_bias", "response_format", "tools")
ANSWER_FIELDS = (*OPENAI_ANSWER_FIELDS, "grammar")
# The answer field each setting belongs to (`answer_settings`' names).
FIELD_OF_SETTING = {
    "logprobs": "logprobs",
    "top_logprobs": "logprobs",
    "logit_bias": "logit_bias",
    "response_format": "response_format",
    "tools": "tools",
    "tool_choice": "tools",
    "parallel_tool_calls": "tools",
    "grammar": "grammar",
}
# Settings that shape the answer (structured outputs, tools, a grammar), which
# `chat_settings` leaves out.
STRUCTURE_SETTINGS = ("response_format", "tools", "tool_choice", "parallel_tool_calls", "grammar")
# A Lark grammar (llguidance's dialect) an answer must follow; a batch may give one per
# conversation (None: that one answers freely).
Grammar = str | Sequence[str | None]


def chat_settings(
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: list[str] | None = None,
    seed: int | None = None,
    logprobs: bool | None = None,
    top_logprobs: int | None = None,
    logit_bias: dict[str, float] | None = None,
    grammar: Grammar | None = None,
) -> dict:
    """The chat settings a caller gave, under OpenAI's names; the ones left None are left to
    the provider. An unknown setting is a TypeError, as a method's keyword would be."""
    given = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "stop": stop,
        "seed": seed,
        "logprobs": logprobs,
        "top_logprobs": top_logprobs,
        "logit_bias": logit_bias,
        "grammar": grammar,
    }
    return {name: value for name, value in given.items() if value is not None}


def answer_settings(**options) -> dict:
    """`chat_settings`, and the structure settings (`STRUCTURE_SETTINGS`: `response_format`,
    `tools`, `tool_choice`, `parallel_tool_calls`, under OpenAI's names and shapes) that a
    provider answering them takes too; the ones left None are left out."""
    structure = {name: options.pop(name, None) for name in STRUCTURE_SETTINGS}
    settings = chat_settings(**options)
    settings.update({name: value for name, value in structure.items() if value is not None})
    return settings


class ChatStream:
    """One answer as it arrives: iterate for text deltas; `result` holds the whole `Answer`
    after.

    Every provider streams in this shape. `events` is a generator that yields the deltas
    and returns the `Answer`.
    """

    def __init__(self, events: Generator[str, None, Answer]) -> None:
        self._events = events
        self.result: Answer | None = None

    @classmethod
    def of(cls, result: Answer) -> ChatStream:
        """A whole answer as a stream of one delta (providers that do not stream)."""

        def events() -> Generator[str, None, Answer]:
            if result.text:
                yield result.text
            return result

        return cls(events())

    def __iter__(self) -> Iterator[str]:
        self.result = yield from self._events

    def close(self) -> None:
        self._events.close()
