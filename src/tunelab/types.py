"""Records every layer shares: this machine's provider name, one answer with its usage, and
an answer's score.

An `Answer` is what any model says to one chat, wherever it runs: the engine's generation,
a local or hosted provider, an evaluation's candidate, the server's response. Frozen, so
that a batch's answers can be handed between threads and layers as they are. An
`AnswerScore` is a fixed answer's log-likelihood after a chat (label scoring), from a
provider that gives log-likelihoods.
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
class Answer:
    """One answer: its text, why it ended ("stop", "length"; "error" with `error` set when
    a hosted call failed), its usage and how long it took (seconds, 0 when not timed)."""

    text: str
    finish_reason: str = "stop"
    usage: Usage = Usage()
    latency: float = 0.0
    error: str | None = None
    model: str = ""  # the id the backend answered as, where it says (hosted APIs do)

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
