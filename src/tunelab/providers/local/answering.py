"""The engine answering for the local provider: batches of chats, one streamed chat, and
fixed answers' log-likelihoods, all on models from the provider's `ModelCache`.

Batches run in chunks of a few engine batches, so that progress is reported and a cancel is
seen between chunks while each chunk still sorts its prompts by length for batching.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import tunelab.engine.generate as generation  # module attributes: tests stand in for them
import tunelab.engine.score as scoring
from tunelab.errors import check_cancel
from tunelab.providers.base import ChatStream
from tunelab.providers.local.model_cache import LoadedModel
from tunelab.types import Answer, AnswerScore

Progress = Callable[[int], None]  # called with the number of items just finished
# Rows per batched generation. On CPU larger batches keep paying off: 96 TREC prompts with
# SmolLM2 took 20.8 s at 16, 17.4 s at 32 and 16.5 s at 48 (2026-11-22, 2 cores, fp32).
BATCH_SIZE = 48
CHUNK_BATCHES = 4  # batches between progress reports and cancel checks


def engine_stream(loaded: LoadedModel, messages: list[dict], **sampling) -> ChatStream:
    """The engine's answer to `messages` as a provider's `ChatStream` (`sampling`: the
    engine's `stream_chat` settings)."""
    chat = generation.stream_chat(loaded.model, loaded.tokenizer, messages, **sampling)

    def events() -> Generator[str, None, Answer]:
        began = time.perf_counter()
        yield from chat
        done = chat.completion
        assert done is not None, "the engine's stream ended without its completion"
        return Answer(
            done.text,
            done.finish_reason,
            done.usage,
            time.perf_counter() - began,
            model=loaded.info.name,
            logprobs=done.logprobs,
        )

    return ChatStream(events())


def answer_chats(
    loaded: LoadedModel,
    conversations: list[list[dict]],
    *,
    progress: Progress | None = None,
    cancel=None,
    batch_size: int = BATCH_SIZE,
    **sampling,
) -> list[Answer]:
    """One answer per conversation, in order, batched through the engine."""
    answers: list[Answer] = []
    chunk = batch_size * CHUNK_BATCHES
    for begin in range(0, len(conversations), chunk):
        check_cancel(cancel, answers)
        part = conversations[begin : begin + chunk]
        answers += generation.generate(
            loaded.model, loaded.tokenizer, part, batch_size=batch_size, **sampling
        )
        if progress is not None:
            progress(len(part))
    return answers


def score_chats(
    loaded: LoadedModel,
    conversations: list[list[dict]],
    answers: list[str],
    *,
    progress: Progress | None = None,
    cancel=None,
    batch_size: int = BATCH_SIZE,
) -> list[list[AnswerScore]]:
    """Each of `answers`' log-likelihood after each conversation: `[conversation][answer]`."""
    scores: list[list[AnswerScore]] = []
    chunk = batch_size * CHUNK_BATCHES
    for begin in range(0, len(conversations), chunk):
        check_cancel(cancel, scores)
        part = conversations[begin : begin + chunk]
        scores += scoring.score_answers(
            loaded.model, loaded.tokenizer, part, answers, batch_size=batch_size
        )
        if progress is not None:
            progress(len(part))
    return scores
