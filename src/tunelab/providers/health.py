"""`tunelab providers check`: one one-token request to a provider or named endpoint.

The verdict is one line either way: which model answered and how fast, or why nothing did
(unreachable, refused key, unknown model), never with a key in it.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

from tunelab.errors import TunelabError, redact_urls
from tunelab.providers.endpoints import find_endpoint
from tunelab.providers.hosted.retry import RetryPolicy
from tunelab.providers.provider import CHAT
from tunelab.providers.registry import provider_class

COMPATIBLE = "openai-compatible"
PING = [{"role": "user", "content": "Say OK."}]
# A check is a question, not a job: one retry at most, so an unreachable host answers quickly.
CHECK_POLICY = RetryPolicy(max_attempts=2, base_delay=0.2, max_delay=0.5)


@dataclass
class CheckResult:
    name: str
    where: str  # the base URL, or the provider's default host
    ok: bool
    model: str | None = None
    seconds: float | None = None
    problem: str | None = None  # "code: message" when not ok

    def line(self) -> str:
        if self.ok:
            return f"✓ {self.name} ({self.where}): {self.model} answered in {self.seconds:.2f} s"
        return f"✗ {self.name} ({self.where}): {self.problem}"


def check(name: str, model: str | None = None) -> CheckResult:
    """Ask provider or endpoint `name` for one token (of `model`, else one it offers)."""
    endpoint = find_endpoint(name)
    where = redact_urls(endpoint.base_url) if endpoint else "its default host"
    try:
        provider = _provider(name, endpoint)
        model = model or _some_model(provider)
        began = time.perf_counter()
        provider.chat(model, PING, max_tokens=1)
    except TunelabError as err:
        return CheckResult(name, where, False, model, problem=f"{err.code}: {err.message}")
    return CheckResult(name, where, True, model, time.perf_counter() - began)


def _provider(name: str, endpoint):
    cls = provider_class(COMPATIBLE if endpoint else name)
    if not cls.supports(CHAT):
        raise TunelabError("unsupported_operation", f"{name} does not chat; nothing to check.")
    options = (
        {"base_url": endpoint.base_url, "key_variable": endpoint.key_variable} if endpoint else {}
    )
    if "policy" in inspect.signature(cls).parameters:
        options["policy"] = CHECK_POLICY
    return cls(**options)


def _some_model(provider) -> str:
    """A model to ask: the provider's first catalog model, or the endpoint's first served."""
    offered = type(provider).models()
    if offered:
        return offered[0].id
    served = provider.list_served_models()
    if not served:
        raise TunelabError("no_models", "the endpoint lists no models.", hint="pass --model NAME")
    return served[0]
