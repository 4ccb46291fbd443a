"""Retries for calls to hosted providers, and their errors as `TunelabError`.

The policy follows openai-python's: capped exponential backoff (0.5 s doubling to 8 s) with
jitter, honouring `Retry-After`, on 429, 5xx and connection errors; any other 4xx is the
caller's mistake and is raised at once. Both official SDKs (openai, together) are generated
by Stainless, so their exceptions share attributes (`status_code`, `response`, `body`) and
one classifier serves both. The SDKs' own retries are turned off (`max_retries=0`) so that
this policy, and a create's reconciliation between attempts, apply.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tunelab.errors import TunelabError
from tunelab.providers.hosted.http_limits import is_read_timeout

T = TypeVar("T")
RETRY_AFTER_CAP = 60.0  # a server asking for longer is treated as an outage, not a pause


@dataclass
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempts count from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return backoff * (1 - 0.25 * random.random())  # jitter spreads clients apart


def is_retryable(err: Exception) -> bool:
    """429, 5xx and connection errors (a connect timeout included) are worth another try; a
    server that took a request and then stayed silent past the timeout is not asked again."""
    status = getattr(err, "status_code", None)
    if status is not None:
        return status == 429 or status >= 500
    if is_read_timeout(err):
        return False
    return type(err).__name__ in {"APIConnectionError", "APITimeoutError"} or isinstance(
        err, (ConnectionError, TimeoutError)
    )


def retry_after_seconds(err: Exception) -> float | None:
    """The wait a 429 or 503 asked for, from `Retry-After` (seconds or an HTTP date)."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass  # malformed: fall back to Retry-After below
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None


def call_with_retries(
    call: Callable[[], T],
    *,
    policy: RetryPolicy | None = None,
    before_retry: Callable[[], T | None] | None = None,
) -> T:
    """`call()`, retried per `policy`; `before_retry` may return the result instead.

    A create passes `before_retry` to look for the job its failed attempt may have made.
    """
    policy = policy or RetryPolicy()
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return call()
        except Exception as err:
            if not is_retryable(err) or attempt == policy.max_attempts:
                raise
            policy.sleep(policy.delay(attempt, retry_after_seconds(err)))
            if before_retry is not None:
                found = before_retry()
                if found is not None:
                    return found
    raise AssertionError("unreachable")  # the loop returns or raises


def provider_error(err: Exception, provider: str, key_variable: str) -> TunelabError:
    """An SDK exception as a `TunelabError` whose message never holds the key."""
    status = getattr(err, "status_code", None)
    detail = redact(_error_detail(err), key_variable)
    if status in (401, 403):
        return TunelabError(
            "provider_auth_failed",
            f"{provider} refused the credentials ({status}): {detail}",
            hint=f"check {key_variable} (in the environment or .env)",
        )
    if status == 404:
        return TunelabError("provider_not_found", f"{provider}: {detail}", hint=None)
    if status == 429:
        return TunelabError(
            "provider_rate_limited",
            f"{provider} kept answering 429 (rate limited): {detail}",
            hint="wait a minute and try again, or lower the request rate",
        )
    if status is not None and status >= 500:
        return TunelabError(
            "provider_unavailable",
            f"{provider} kept failing with {status}: {detail}",
            hint="the service may be down; try again later",
        )
    if status is not None:
        return TunelabError("provider_rejected", f"{provider} rejected the request: {detail}")
    if is_read_timeout(err):
        return TunelabError(
            "provider_timeout",
            f"{provider} took the request but sent no answer in time: {detail}",
            hint="the server may be hung or overloaded; try again later",
        )
    return TunelabError(
        "provider_unreachable",
        f"could not reach {provider}: {detail}",
        hint="check the network connection and the base URL",
    )


def mid_answer_error(
    err: Exception,
    where: str,
    *,
    from_sdk: bool,
    on_status: Callable[[Exception], TunelabError],
    scrub: Callable[[str], str],
) -> TunelabError:
    """An error met while reading a streamed answer, from a provider that was reached.

    An error status is mapped as any other (`on_status`); an error event the SDK raised
    (`from_sdk`, arriving with the stream's 200) or a connection broken off is the provider
    failing mid-answer. `scrub` takes the key out of the provider's words.
    """
    status = getattr(err, "status_code", None)
    if status is not None and status >= 400:
        return on_status(err)
    if from_sdk:
        detail = scrub(getattr(err, "message", None) or str(err))
        message = f"{where} failed mid-answer: {detail}"
    else:
        message = f"{where} broke off its answer ({type(err).__name__})."
    return TunelabError(
        "provider_unavailable", message, hint="try again; the service or the connection may be down"
    )


def _error_detail(err: Exception) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return getattr(err, "message", None) or str(err) or type(err).__name__


def redact(text: str, *key_variables: str) -> str:
    """`text` with the values of the named secret variables replaced by `***`."""
    for name in key_variables:
        value = os.environ.get(name, "").strip()
        if len(value) >= 6:
            text = text.replace(value, "***")
    return text
