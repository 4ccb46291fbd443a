"""Any OpenAI-compatible endpoint as a provider: another `tunelab serve`, vLLM, Ollama,
OpenRouter, LM Studio.

It is the OpenAI provider pointed at another base URL, with two differences: it has no
catalog (its models are whatever the endpoint serves), and it sends a key only when the user
named one for the endpoint (`tunelab providers add NAME URL --key-env VAR`), never
`OPENAI_API_KEY`. Fine-tuning works where the endpoint offers OpenAI's fine-tuning API (a
`tunelab serve` does); elsewhere the endpoint's refusal is reported.
"""

from __future__ import annotations

from tunelab.errors import usage_error
from tunelab.providers.hosted.openai import KEY_VARIABLE, OpenAIProvider
from tunelab.providers.provider import CHAT, FILES, FINE_TUNING, ModelEntry

NAME = "openai-compatible"


def register_providers(register) -> None:
    register(OpenAICompatibleProvider)


class OpenAICompatibleProvider(OpenAIProvider):
    """Chat (and fine-tuning where offered) on any server that speaks OpenAI's API."""

    name = NAME
    title = "OpenAI-compatible endpoint"
    capabilities = frozenset({CHAT, FINE_TUNING, FILES})
    key_variable = None  # only a key named for the endpoint is ever sent
    official_hosts = ()

    def __init__(self, *, base_url: str | None = None, **options) -> None:
        if not base_url:
            raise usage_error(
                "base_url_required",
                "the openai-compatible provider needs the endpoint's URL.",
                hint="pass --base-url URL, name an endpoint (`tunelab providers add`), "
                "or write MODEL@URL",
            )
        super().__init__(base_url=base_url, **options)

    @classmethod
    def models(cls) -> list[ModelEntry]:
        return []  # whatever the endpoint serves: `tunelab providers check NAME` lists them

    @classmethod
    def owns(cls, name: str) -> str | None:
        return None

    def _secret_variables(self) -> list[str]:
        # OPENAI_API_KEY never goes to the endpoint, but an endpoint may still quote it.
        return [KEY_VARIABLE, *super()._secret_variables()]

    def list_served_models(self) -> list[str]:
        """The ids the endpoint's `GET /models` lists."""
        page = self._call(lambda: self._client.models.list())
        return [model.id for model in page.data]
