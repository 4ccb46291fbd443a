"""What every hosted service shares: an SDK client under tunelab's retry policy, errors
without the key, and its jobs recorded in the registry.

`HostedProvider` is the base of the OpenAI, Together and Anthropic providers (and of plugins
for other hosted services). It builds the service's SDK client with the SDK's own retries off
(the subclass's `_new_client`), so that `tunelab.providers.hosted.retry` applies, with a
create's reconciliation between attempts; it turns the SDK's exceptions into `TunelabError`s
that never hold a key, before an answer streams and while it does. A job's record is created
before the service hears of it, kept current from the service's answers, stopped and resumed
through it (`tunelab.providers.hosted.jobs`). A service that trains nothing (Anthropic)
refuses each of these by name, through the operations its capabilities lack.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from tunelab.errors import TunelabError
from tunelab.providers.base import FIELD_OF_SETTING, answer_settings
from tunelab.providers.hosted import jobs as hosted_jobs
from tunelab.providers.hosted import retry
from tunelab.providers.provider import FINE_TUNING, Provider
from tunelab.registry import Job
from tunelab.settings import load_env

T = TypeVar("T")


class HostedProvider(Provider, ABC):
    """A provider whose answers and jobs come from a remote service through its SDK.

    A subclass names the SDK's client (`_new_client`) and the SDK's base exception
    (`_sdk_error`); `_call` runs every request under the retry policy.
    """

    # Where the SDK would read a base URL of its own: read here instead, so that the host it
    # names goes through the same rule as any other (the provider's own key goes only to its
    # official hosts).
    base_url_variable: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        key_variable: str | None = None,
        policy: retry.RetryPolicy | None = None,
        client: Any = None,
    ) -> None:
        base_url = base_url or self._base_url_from_environment()
        super().__init__(base_url=base_url, key_variable=key_variable)
        self.policy = policy or retry.RetryPolicy()
        if client is None:
            key = self.sdk_key(api_key, base_url, key_variable)  # no key for strangers
            client = self._new_client(key, base_url)
        self._client = client
        self._key: str | None = client.api_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self._client.base_url)!r})"

    @classmethod
    def _base_url_from_environment(cls) -> str | None:
        if cls.base_url_variable is None:
            return None
        load_env()
        return os.environ.get(cls.base_url_variable, "").strip() or None

    @abstractmethod
    def _new_client(self, api_key: str, base_url: str | None) -> Any:
        """The SDK's client for `base_url` (None: the service's own), its retries off."""

    @abstractmethod
    def _sdk_error(self) -> type[Exception]:
        """The base class of the SDK's exceptions (the SDK is imported when this is called)."""

    def _where(self) -> str:
        """The service as an error message names it."""
        return self.title

    # -- chat settings ---------------------------------------------------------------------

    def _answer_settings(self, options: dict) -> dict:
        """The chat settings given (`answer_settings`), each answer field's only where this
        provider declares it (`answer_fields`): another is refused by name, never dropped."""
        settings = answer_settings(**options)
        for name in settings:
            field = FIELD_OF_SETTING.get(name)
            if field is not None and field not in self.answer_fields:
                raise self.unsupported_setting(name)
        return settings

    def unsupported_setting(self, name: str, why: str = "") -> TunelabError:
        """The refusal of the chat setting `name` (OpenAI's request field), and `why`."""
        return TunelabError(
            "unsupported_parameter",
            f"the {self.name} provider does not support `{name}`{why}; leave it out.",
            hint="the README's table of chat request fields says what each provider passes on",
        )

    # -- requests and their errors ----------------------------------------------------------

    def _call(
        self, call: Callable[[], T], *, before_retry: Callable[[], T | None] | None = None
    ) -> T:
        """`call()` under the retry policy, with the SDK's errors as `TunelabError`."""
        try:
            return retry.call_with_retries(call, policy=self.policy, before_retry=before_retry)
        except self._sdk_error() as err:
            raise self._error(err) from None  # `from None`: the SDK's exception may quote the key

    def _error(self, err: Exception) -> TunelabError:
        """An SDK exception as a `TunelabError` naming the variable the key came from."""
        variable = self.endpoint_key_variable or self.key_variable or "the endpoint's key"
        return self._scrub(retry.provider_error(err, self._where(), variable))

    def _stream_error(self, err: Exception) -> TunelabError:
        """An error met while an answer streams (see `retry.mid_answer_error`)."""
        return retry.mid_answer_error(
            err,
            self._where(),
            from_sdk=isinstance(err, self._sdk_error()),
            on_status=self._error,
            scrub=self._redact,
        )

    def _scrub(self, error: TunelabError) -> TunelabError:
        """`error` without the key."""
        return TunelabError(error.code, self._redact(error.message), error.hint)

    def _redact(self, text: str) -> str:
        """`text` without the key: the environment's (`provider_error` takes out only the
        one it names), and the one the client sends (the placeholder sent to a stranger's
        server too: whatever a server quotes of its credentials is masked alike)."""
        text = retry.redact(text, *self._secret_variables())
        if self._key and len(self._key) >= 6:
            text = text.replace(self._key, "***")
        return text

    def _secret_variables(self) -> list[str]:
        """The variables whose values never appear in a message."""
        return [name for name in (self.key_variable, self.endpoint_key_variable) if name]

    # -- jobs -------------------------------------------------------------------------------

    @classmethod
    def start_job(cls, store, spec, report, *, start: bool = True) -> Job:
        return hosted_jobs.create(store, spec, report)

    @classmethod
    def refresh_job(cls, store, job: Job, *, events: bool = True) -> Job:
        return hosted_jobs.refresh(store, job, events=events)

    @classmethod
    def stop_job(cls, store, job: Job, *, pause: bool) -> Job:
        return hosted_jobs.stop(store, job, pause=pause)

    @classmethod
    def restart_job(cls, store, job: Job, *, start: bool = True) -> Job:
        return hosted_jobs.resume(store, job)

    @classmethod
    def import_job(
        cls, store, job_id: str, *, base_url: str | None = None, key_variable: str | None = None
    ) -> Job:
        if not cls.supports(FINE_TUNING):
            raise cls.unsupported_here("fine-tuning")
        return hosted_jobs.import_job(
            store, cls.name, job_id, base_url=base_url, key_variable=key_variable
        )
