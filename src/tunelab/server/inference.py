"""Chat answers for the server: what the routes call.

Model names resolve as everywhere else (`resolve_chat_model`: base aliases, directories,
training outputs, registry `ft:` names, `PROVIDER/MODEL`, `MODEL@URL`), and the provider
that answers a name answers the request (`Provider.serve_answers`, `serve_stream`,
`serve_scores`): the local provider batches requests for weights on this machine in its
generation queue, a hosted one relays its service's answer. `InferenceService` admits
requests (refusing them with 429 when too many wait), tells each provider it uses the
server's limits, refuses the answer fields (logprobs, logit_bias) a provider does not
honour, and turns the providers' answers into the response's choices. `classify`
answers with the most likely of a request's labels (label scoring, as `eval classify` and
`tunelab chat --labels` do), for providers that give log-likelihoods.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from tunelab.providers.answer_stream import AnswerStream
from tunelab.providers.base import ChatOptions
from tunelab.providers.provider import SCORING, Provider, ServingLimits
from tunelab.providers.resolve import resolve_chat_model
from tunelab.server.errors import ApiError, shutting_down
from tunelab.types import Answer, AnswerScore, Usage, best_answer

__all__ = ["ChatCompletion", "ChatOptions", "InferenceService"]


@dataclass(frozen=True)
class ChatCompletion:
    """A response's choices (one `Answer` each) and its usage, as OpenAI counts it: the
    prompt once however many choices."""

    model: str
    choices: list[Answer]
    usage: Usage
    # With labels: each label's answer log-likelihood, in the request's order.
    label_scores: list[tuple[str, AnswerScore]] | None = None

    @classmethod
    def of(cls, model: str, choices: list[Answer]) -> ChatCompletion:
        completion_tokens = sum(choice.completion_tokens for choice in choices)
        return cls(model, choices, Usage(choices[0].prompt_tokens, completion_tokens))


class InferenceService:
    """Answers chat requests; one per server, used from its event loop."""

    def __init__(
        self,
        memory_budget_bytes: int | None = None,
        max_batch_size: int = 8,
        max_pending: int = 64,
        batch_window_seconds: float = 0.005,
        max_adapters: int | None = None,
        backend: str = "torch",
    ) -> None:
        self.max_pending = max_pending
        self.limits = ServingLimits(
            memory_budget_bytes,
            max(1, max_batch_size),
            batch_window_seconds,
            max_adapters,
            backend=backend,
        )
        # Providers told this server's limits (hosted ones are made per request: held weakly).
        self._serving: weakref.WeakSet[Provider] = weakref.WeakSet()
        self._pending = 0
        self._closed = False

    @property
    def pending(self) -> int:
        """Requests admitted and not yet answered."""
        return self._pending

    def loaded_models(self) -> list[str]:
        """Directories of the models the providers hold for this server, least recently used
        first."""
        return [path for provider in self._serving for path in provider.loaded_models()]

    async def complete(
        self, model: str, messages: list[dict], options: ChatOptions
    ) -> ChatCompletion:
        release = self._admit()
        try:
            provider, name = await self._provider(model)
            _check_fields(provider, model, options)
            answers = await provider.serve_answers(name, messages, options)
            return ChatCompletion.of(model, answers)
        finally:
            release()

    async def classify(
        self, model: str, messages: list[dict], labels: list[str], answers: list[str]
    ) -> ChatCompletion:
        """The answer (of `answers`, one per label) the model finds most likely after the
        messages; needs the model's log-likelihoods."""
        release = self._admit()
        try:
            provider, name = await self._provider(model)
            if not provider.supports(SCORING):
                raise ApiError(
                    400,
                    f"{model} gives no log-likelihoods, so its labels cannot "
                    "be scored; drop `labels` to have it generate.",
                    code="no_logprobs",
                    param="labels",
                )
            scores, prompt_tokens = await provider.serve_scores(name, messages, answers)
        finally:
            release()
        best = best_answer(scores)
        usage = Usage(prompt_tokens, scores[best].n_tokens)
        choice = Answer(answers[best], "stop", usage)
        return ChatCompletion(
            model, [choice], usage, label_scores=list(zip(labels, scores, strict=True))
        )

    async def stream(self, model: str, messages: list[dict], options: ChatOptions) -> AnswerStream:
        """Start answering; returns once the first delta (or an error) is there."""
        release = self._admit()
        answer = AnswerStream()
        try:
            provider, name = await self._provider(model)
            _check_fields(provider, model, options)
            await provider.serve_stream(name, messages, options, answer, release)
        except BaseException:
            release()
            raise
        try:
            await answer.started()
        except BaseException:
            answer.cancel()
            raise
        return answer

    def unload(self, path: str) -> bool:
        """Drop the model loaded from `path` (a deleted fine-tuned model) from memory."""
        return any([provider.forget_weights(path) for provider in self._serving])

    def close(self) -> None:
        self._closed = True
        for provider in list(self._serving):
            provider.stop_serving()

    async def _provider(self, model: str) -> tuple[Provider, str]:
        """The provider answering `model` (told this server's limits), and its id for it."""
        target = await asyncio.to_thread(resolve_chat_model, model)
        provider = target.client()
        if provider not in self._serving:
            provider.start_serving(self.limits)
            self._serving.add(provider)
        return provider, target.model

    def _admit(self) -> Callable[[], None]:
        """Count a request in, or refuse it when too many wait; returns its release."""
        if self._closed:
            raise shutting_down()
        if self._pending >= self.max_pending:
            raise ApiError(
                429,
                f"The server is busy ({self._pending} requests waiting); retry shortly.",
                code="server_busy",
                headers={"Retry-After": "1"},
            )
        self._pending += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._pending -= 1

        return release


def _check_fields(provider: Provider, model: str, options: ChatOptions) -> None:
    """Refuse, by name, the answer fields (logprobs, logit_bias) the provider cannot honour:
    dropping them would answer another question than the one asked."""
    missing = [name for name in options.fields_used() if name not in provider.answer_fields]
    if missing:
        fields = ", ".join(f"`{name}`" for name in missing)
        raise ApiError(
            400,
            f"{model} is answered by the {provider.name} provider, which does not support "
            f"{fields}; leave it out.",
            code="unsupported_parameter",
            param=missing[0],
        )
