"""Records every layer shares: this machine's provider name, one answer with its usage and
token log-probabilities, a streamed piece of an answer, and an answer's score.

An `Answer` is what any model says to one chat, wherever it runs: the engine's generation,
a local or hosted provider, an evaluation's candidate, the server's response. Frozen, so
that a batch's answers can be handed between threads and layers as they are. An
`AnswerScore` is a fixed answer's log-likelihood after a chat (label scoring), from a
provider that gives log-likelihoods. A `JobEvent` is one line of a training job's log, as a
provider reports it and as the registry keeps it (with its job and order added).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import usage_error

# The provider that is this machine: jobs, files and models with no other provider are its.
LOCAL_PROVIDER = "local"


@dataclass(frozen=True)
class Usage:
    """Tokens one answer cost, counted as OpenAI counts them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TopLogprob:
    """One of the most likely tokens at a position, as OpenAI's `top_logprobs` list it:
    its text, its UTF-8 bytes (None for a special token) and its log-probability."""

    token: str
    bytes: tuple[int, ...] | None
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability, and the most likely tokens at its position."""

    token: str
    bytes: tuple[int, ...] | None
    logprob: float
    top_logprobs: tuple[TopLogprob, ...] = ()


class TextDelta(str):
    """A piece of a streamed answer's text, carrying the log-probabilities of the tokens
    generated since the previous piece (None when they were not asked for). A `str`, so
    that whoever only wants the text reads it as text."""

    logprobs: tuple[TokenLogprob, ...] | None

    def __new__(cls, text: str, logprobs: tuple[TokenLogprob, ...] | None = None) -> TextDelta:
        delta = super().__new__(cls, text)
        delta.logprobs = logprobs
        return delta


@dataclass(frozen=True)
class ToolCall:
    """A call of one of the request's tools: its id, the function's name and its arguments
    (JSON text, as OpenAI sends them)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Answer:
    """One answer: its text, why it ended ("stop", "length", "tool_calls"; "error" with
    `error` set when a hosted call failed), its usage and how long it took (seconds, 0 when
    not timed). `tool_calls`: the tools it calls (its text is then what it said besides).

    `logprobs`, when asked for: one entry per generated token (as many as the usage's
    completion tokens, the end of turn included where the answer ended with it)."""

    text: str
    finish_reason: str = "stop"
    usage: Usage = Usage()
    latency: float = 0.0
    error: str | None = None
    model: str = ""  # the id the backend answered as, where it says (hosted APIs do)
    logprobs: tuple[TokenLogprob, ...] | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def prompt_tokens(self) -> int:
        return self.usage.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens

    @classmethod
    def failed(cls, error: str) -> Answer:
        """An answer that never came (a hosted call that failed): an invalid answer."""
        return cls("", "error", error=error)


NORMALIZATIONS = ("sum", "mean")


@dataclass(frozen=True)
class AnswerScore:
    """A fixed answer's log-likelihood after a chat: the sum over its tokens."""

    logprob: float
    n_tokens: int

    def value(self, normalize: str) -> float:
        return self.logprob / self.n_tokens if normalize == "mean" else self.logprob


def best_answer(scores: list[AnswerScore], normalize: str = "sum") -> int:
    """Index of the highest-scoring answer (the first of equals)."""
    if normalize not in NORMALIZATIONS:
        raise usage_error("invalid_scoring", f"normalize must be one of {NORMALIZATIONS}")
    values = [score.value(normalize) for score in scores]
    return values.index(max(values))


@dataclass(frozen=True)
class JobEvent:
    """One line of a training job's log."""

    id: str
    created_at: int
    message: str
    level: str = "info"  # "info", "warn" or "error"
    type: str = "message"  # "message" or "metrics"
    data: dict | None = None
