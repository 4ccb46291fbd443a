"""Candidates: any model answering batches of chats, wherever it lives.

A name resolves as `tunelab chat` resolves it (`tunelab.providers.resolve`): the bundled
alias, a Hugging Face directory, a training output, a registry `ft:` model (local or hosted),
a catalog model, `PROVIDER/MODEL`, or `MODEL@URL` for any OpenAI-compatible service. Models
whose weights are here answer through the engine's batched generation; the others through
their provider, a few requests at a time.
A hosted request that fails is recorded as that item's error (an invalid answer), so one
timeout does not throw away a long evaluation.
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
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunelab.errors import TunelabError

if TYPE_CHECKING:  # torch loads only when a local model is used
    from tunelab.engine.score import AnswerScore

Progress = Callable[[int], None]  # called with the number of answers just finished
# Rows per batched generation. On CPU larger batches keep paying off: 96 TREC prompts with
# SmolLM2 took 20.8 s at 16, 17.4 s at 32 and 16.5 s at 48 (2026-11-22, 2 cores, fp32).
LOCAL_BATCH_SIZE = 48
HOSTED_CONCURRENCY = 4


@dataclass
class Answer:
    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


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
    ) -> list[Answer]:
        """One answer per conversation, in order (local: batched; hosted: a few at a time)."""

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
        """Free what the candidate holds (a local model's memory)."""


class LocalCandidate(Candidate):
    gives_logprobs = True

    def __init__(self, name: str, source: str, batch_size: int = LOCAL_BATCH_SIZE) -> None:
        self.name, self.source, self.batch_size = name, source, batch_size
        self._loaded = None

    def _model(self):
        if self._loaded is None:
            from tunelab.engine import load_base

            model, tokenizer, _ = load_base(self.source)
            model.eval()
            self._loaded = (model, tokenizer)
        return self._loaded

    def answer(self, conversations, *, max_tokens=256, temperature=0.0, progress=None,
               cancel=None) -> list[Answer]:  # fmt: skip
        from tunelab.engine.generate import generate

        model, tokenizer = self._model()
        answers: list[Answer] = []
        # Chunks of a few batches: progress and cancellation between them, while each
        # chunk still sorts its prompts by length for batching.
        chunk = self.batch_size * 4
        for begin in range(0, len(conversations), chunk):
            check_cancel(cancel, answers)
            part = conversations[begin : begin + chunk]
            done = generate(model, tokenizer, part, max_new_tokens=max_tokens,
                            temperature=temperature, batch_size=self.batch_size)  # fmt: skip
            answers += [Answer(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens)
                        for c in done]  # fmt: skip
            if progress is not None:
                progress(len(part))
        return answers

    def score(self, conversations, answers, *, progress=None, cancel=None):
        from tunelab.engine.score import score_answers

        model, tokenizer = self._model()
        scores: list[list[AnswerScore]] = []
        chunk = self.batch_size * 4  # progress and cancellation between chunks
        for begin in range(0, len(conversations), chunk):
            check_cancel(cancel, scores)
            part = conversations[begin : begin + chunk]
            scores += score_answers(model, tokenizer, part, answers, batch_size=self.batch_size)
            if progress is not None:
                progress(len(part))
        return scores

    def close(self) -> None:
        self._loaded = None


class HostedCandidate(Candidate):
    """A model that answers through its provider's chat (a `ChatModel`), a few at a time."""

    def __init__(self, name: str, model) -> None:
        self.name, self.model = name, model

    def answer(self, conversations, *, max_tokens=256, temperature=0.0, progress=None,
               cancel=None) -> list[Answer]:  # fmt: skip
        def one(messages: list[dict]) -> Answer:
            check_cancel(cancel)
            try:
                result = self.model.chat(messages, max_tokens=max_tokens,
                                         temperature=temperature)  # fmt: skip
            except TunelabError as err:
                answer = Answer("", "error", error=f"{err.code}: {err.message}")
            else:
                answer = Answer(result.text, result.finish_reason, result.prompt_tokens,
                                result.completion_tokens)  # fmt: skip
            if progress is not None:
                progress(1)
            return answer

        answers: list[Answer] = []
        with ThreadPoolExecutor(HOSTED_CONCURRENCY) as pool:
            try:
                answers.extend(pool.map(one, conversations))  # in order, up to a cancel
            except Interrupted as stop:
                raise Interrupted(answers) from stop
        return answers


class RecordedCandidate(Candidate):
    """Answers a model gave earlier, looked up by conversation (`key(messages)`); a
    conversation with no recorded answer is that item's error, as a failed request is."""

    def __init__(self, name: str, answers: dict[str, Answer], key: Callable[[list[dict]], str]):
        self.name, self.answers, self.key = name, answers, key

    def answer(self, conversations, *, max_tokens=256, temperature=0.0, progress=None,
               cancel=None) -> list[Answer]:  # fmt: skip
        answers: list[Answer] = []
        for messages in conversations:
            check_cancel(cancel, answers)
            found = self.answers.get(self.key(messages))
            answers.append(found or Answer("", "error", error="no recorded answer to this prompt"))
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


class Interrupted(TunelabError):
    """The cancel event (Ctrl-C, the studio's Cancel) stopped a model part-way: `done` holds
    what it finished, the answers (or scores) of the first `len(done)` items, in order."""

    def __init__(self, done: list | None = None) -> None:
        super().__init__("cancelled", "the evaluation was cancelled.", exit_code=130)
        self.done = list(done or [])
        self.seconds = 0.0


def check_cancel(cancel: threading.Event | None, done: list | None = None) -> None:
    """Stop here if asked to, keeping `done` (what this model finished so far)."""
    if cancel is not None and cancel.is_set():
        raise Interrupted(done)


def check_models(names) -> None:
    """Resolve every model name (and its provider's key) before any work: front ends call it
    before reading data, so a mistyped `--model` fails at once instead of after minutes."""
    from tunelab.providers.resolve import check_chat_model

    for name in names:
        check_chat_model(name)


def open_candidate(name: str) -> Candidate:
    """The candidate `name` refers to (see the module docstring)."""
    from tunelab.providers.resolve import resolve_chat_model

    stand_in = (_STAND_INS.get() or {}).get(name)
    if stand_in is not None:
        return stand_in

    model = resolve_chat_model(name)
    source = model.engine_source
    if source is not None:  # weights on this machine: batched through the engine
        return LocalCandidate(name, source)
    return HostedCandidate(name, model)


def answer_all(name: str, conversations: list[list[dict]], *, max_tokens: int, progress=None,
               cancel: threading.Event | None = None) -> tuple[list[Answer], float]:  # fmt: skip
    """Model `name`'s answers to every conversation (greedy), and the seconds they took.

    `progress(name, total)` may return a callback advanced as answers finish. The model is
    freed afterwards.
    """
    candidate = open_candidate(name)
    try:
        task = progress(name, len(conversations)) if progress else None
        began = time.perf_counter()
        try:
            answers = candidate.answer(conversations, max_tokens=max_tokens, progress=task,
                                       cancel=cancel)  # fmt: skip
        except Interrupted as stop:
            stop.seconds = time.perf_counter() - began
            raise
        _fail_if_all_failed(name, answers)
        return answers, time.perf_counter() - began
    finally:
        candidate.close()


def score_all(name: str, conversations: list[list[dict]], answers: list[str], *, progress=None,
              cancel: threading.Event | None = None):  # fmt: skip
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
