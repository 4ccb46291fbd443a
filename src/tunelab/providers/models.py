"""Models on every provider: the base models each provider offers and the ones jobs produced.

Which backend answers a name is `tunelab.providers.resolve.resolve_chat_model`'s business.
"""

from __future__ import annotations

from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.catalog import CATALOG_AS_OF
from tunelab.providers.registry import provider_classes
from tunelab.registry import Model


def list_models(*, provider: str | None = None, kind: str | None = None) -> list[Model]:
    """Fine-tuned models from the registry, newest first, then the providers' base models."""
    with job_registry.Store() as store:
        tuned = store.list_models(provider)
    base = [
        Model(
            id=entry.id,
            provider=entry.provider,
            kind="base",
            aliases=tuple(entry.aliases),
            details={"catalog_as_of": CATALOG_AS_OF},
        )
        for name, cls in provider_classes().items()
        if provider is None or name == provider
        for entry in cls.models()
    ]
    return [m for m in (*tuned, *base) if kind is None or m.kind == kind]


def delete_model(name: str) -> Model:
    """Forget a fine-tuned model (a local one's files stay where its job wrote them)."""
    with job_registry.Store() as store:
        model = store.get_model(name)
        store.delete_model(name)
    return model
