"""Candidates: any model answering batches of chats, wherever it lives.

A name resolves as `tunelab chat` resolves it (`tunelab.providers.resolve`): the bundled
alias, a Hugging Face directory, a training output, a registry `ft:` model (local or hosted),
a catalog model, `PROVIDER/MODEL`, or `MODEL@URL` for any OpenAI-compatible service, and its
provider answers (`Provider.answer_batch`: batched through the engine for weights on this
machine, a few requests at a time for a hosted service, where a request that fails is that
item's error, an invalid answer, so one timeout does not throw away a long evaluation).
Inside `answering_from`, a name may stand for answers recorded earlier (`RecordedCandidate`):
a model that can no longer be asked (an OpenAI fine-tune after its shutdown) is scored on
what it said while it answered.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from tunelab.errors import Interrupted, TunelabError, check_cancel
from tunelab.providers.base import Grammar
from tunelab.providers.resolve import ChatModel, check_chat_model, resolve_chat_model
from tunelab.types import Answer, AnswerScore

__all__ = [
    "Answer",
    "Candidate",
    "Interrupted",
    "answer_all",
    "check_cancel",
    "open_candidate",
    "score_all",
]

Progress = Callable[[int], None]  # called with the number of answers just finished


class Candidate(abc.ABC):
    """A model under evaluation (or a judge): `answer` many chats, in order."""

    name: str
    gives_logprobs = False  # whether `score` works (local models) or returns None (hosted)

    @abc.abstractmethod
    def answer(
        self,
        conversations: list[list[dict]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        tools: list[dict] | None = None,
        grammar: Grammar | None = None,
    ) -> list[Answer]:
        """One answer per conversation, in order (local: batched; hosted: a few at a time);
        `tools`: OpenAI's tool definitions the model may call in every answer; `grammar`: the
        Lark grammar every answer follows, or one per conversation."""

    def score(
        self,
        conversations: list[list[dict]],
        answers: list[str],
        *,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> list[list[AnswerScore]] | None:
        """Each answer's log-likelihood after each conversation (`[conversation][answer]`);
        None where the model gives no log-likelihoods (hosted chat APIs)."""
        return None

    def chat(self, messages: list[dict], max_tokens: int = 512) -> str:
        """One answer's text: the judge's interface."""
        [answer] = self.answer([messages], max_tokens=max_tokens)
        if answer.error:
            raise TunelabError("model_call_failed", f"{self.name}: {answer.error}")
        return answer.text

    def close(self) -> None:  # noqa: B027 (most candidates hold nothing to free)
        """Free what the candidate holds (a model's weights stay in its provider's cache,
        within the cache's memory budget, for the next evaluation in this process)."""


class ModelCandidate(Candidate):
    """A model its provider answers (`ChatModel`): batched, scored where it gives
    log-likelihoods."""

    def __init__(self, name: str, model: ChatModel) -> None:
        self.name, self.model = name, model
        self.gives_logprobs = model.gives_logprobs

    def answer(
        self,
        conversations,
        *,
        max_tokens=256,
        temperature=0.0,
        progress=None,
        cancel=None,
        tools=None,
        grammar=None,
    ) -> list[Answer]:
        asked = {"tools": tools} if tools else {}  # only tool evaluations ask with tools
        if grammar is not None:  # only constrained query evaluations give a grammar
            asked["grammar"] = grammar
        return self.model.answer_batch(
            conversations,
            max_tokens=max_tokens,
            temperature=temperature,
            progress=progress,
            cancel=cancel,
            **asked,
        )

    def score(self, conversations, answers, *, progress=None, cancel=None):
        if not self.gives_logprobs:
            return None
        return self.model.score(conversations, answers, progress=progress, cancel=cancel)


class RecordedCandidate(Candidate):
    """Answers a model gave earlier, looked up by conversation (`key(messages)`); a
    conversation with no recorded answer is that item's error, as a failed request is."""

    def __init__(self, name: str, answers: dict[str, Answer], key: Callable[[list[dict]], str]):
        self.name, self.answers, self.key = name, answers, key

    def answer(self, conversations, *, progress=None, cancel=None, **asking) -> list[Answer]:
        """The recorded answers: already given, so what the asking would set (`max_tokens`,
        `temperature`, `tools`, a grammar) cannot change them."""
        answers: list[Answer] = []
        for messages in conversations:
            check_cancel(cancel, answers)
            found = self.answers.get(self.key(messages))
            answers.append(found or Answer.failed("no recorded answer to this prompt"))
            if progress is not None:
                progress(1)
        return answers


# Names answered by a stand-in (`answering_from`) in this context instead of by the model.
_STAND_INS: ContextVar[dict[str, Candidate] | None] = ContextVar("stand_ins", default=None)


@contextlib.contextmanager
def answering_from(stand_ins: dict[str, Candidate]) -> Iterator[None]:
    """While inside, `open_candidate(name)` gives `stand_ins[name]` for these names (in this
    context only, the thread or task that entered it: evaluations running elsewhere still
    ask the model)."""
    token = _STAND_INS.set({**(_STAND_INS.get() or {}), **stand_ins})
    try:
        yield
    finally:
        _STAND_INS.reset(token)


def check_models(names) -> None:
    """Resolve every model name (and its provider's key) before any work: front ends call it
    before reading data, so a mistyped `--model` fails at once instead of after minutes."""
    for name in names:
        check_chat_model(name)


def open_candidate(name: str, *, follow_alias: bool = True) -> Candidate:
    """The candidate `name` refers to (see the module docstring); `follow_alias=False`: the
    model itself, not the one an alias of its name stands for."""
    stand_in = (_STAND_INS.get() or {}).get(name)
    if stand_in is not None:
        return stand_in
    return ModelCandidate(name, resolve_chat_model(name, follow_alias=follow_alias))


def answer_all(
    name: str,
    conversations: list[list[dict]],
    *,
    max_tokens: int,
    progress=None,
    cancel: threading.Event | None = None,
    tools: list[dict] | None = None,
    grammar: Grammar | None = None,
) -> tuple[list[Answer], float]:
    """Model `name`'s answers to every conversation (greedy; `tools` shown to it in each;
    `grammar`: the Lark grammar the answers follow, or one per conversation), and the
    seconds they took.

    `progress(name, total)` may return a callback advanced as answers finish. The model is
    freed afterwards.
    """
    candidate = open_candidate(name)
    try:
        task = progress(name, len(conversations)) if progress else None
        began = time.perf_counter()
        try:
            answers = candidate.answer(
                conversations,
                max_tokens=max_tokens,
                progress=task,
                cancel=cancel,
                tools=tools,
                grammar=grammar,
            )
        except Interrupted as stop:
            stop.seconds = time.perf_counter() - began
            raise
        _fail_if_all_failed(name, answers)
        return answers, time.perf_counter() - began
    finally:
        candidate.close()


def score_all(
    name: str,
    conversations: list[list[dict]],
    answers: list[str],
    *,
    progress=None,
    cancel: threading.Event | None = None,
):
    """Model `name`'s scores of every answer after every conversation, and the seconds they
    took; (None, 0.0) when the model gives no log-likelihoods. The model is freed afterwards."""
    candidate = open_candidate(name)
    try:
        if not candidate.gives_logprobs:
            return None, 0.0
        task = progress(name, len(conversations)) if progress else None
        began = time.perf_counter()
        try:
            scores = candidate.score(conversations, answers, progress=task, cancel=cancel)
        except Interrupted as stop:
            stop.seconds = time.perf_counter() - began
            raise
        return scores, time.perf_counter() - began
    finally:
        candidate.close()


def _fail_if_all_failed(name: str, answers: list[Answer]) -> None:
    """Every call failed: that is an unreachable model, not a model that answers badly."""
    failed = [a for a in answers if a.error]
    if answers and len(failed) == len(answers):
        raise TunelabError(
            "model_call_failed",
            f"{name}: all {len(failed)} calls failed; first error: {failed[0].error}",
            hint="check that the model's service is reachable and its key is set",
        )
