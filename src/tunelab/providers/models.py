"""Models on every provider: the base models each provider offers and the ones jobs produced.

Which backend answers a name is `tunelab.providers.resolve.resolve_chat_model`'s business.
"""

from __future__ import annotations

from tunelab.catalog import CATALOG_AS_OF
from tunelab.providers.registry import provider_classes
from tunelab.registry import Store


def list_models(*, provider: str | None = None, kind: str | None = None) -> list[dict]:
    """Fine-tuned models from the registry, newest first, then the catalog's base models."""
    with Store() as store:
        tuned = [_fine_tuned(row) for row in store.list_models(provider)]
    base = [
        {
            "id": entry.id,
            "object": "model",
            "created": None,
            "owned_by": entry.provider,
            "provider": entry.provider,
            "kind": "base",
            "base_model": None,
            "job_id": None,
            "path": None,
            "aliases": list(entry.aliases),
            "catalog_as_of": CATALOG_AS_OF,
        }
        for name, cls in provider_classes().items()
        if provider is None or name == provider
        for entry in cls.models()
    ]
    models = [*tuned, *base]
    return [m for m in models if kind is None or m["kind"] == kind]


def _fine_tuned(row: dict) -> dict:
    return {
        "id": row["id"],
        "object": "model",
        "created": row["created_at"],
        "owned_by": row["provider"],
        "provider": row["provider"],
        "kind": row["kind"],
        "base_model": row["base_model"],
        "job_id": row["job_id"],
        "path": row["path"],
        "details": row["details"],
    }


def delete_model(name: str) -> dict:
    """Forget a fine-tuned model (a local one's files stay where its job wrote them)."""
    with Store() as store:
        model = store.get_model(name)
        store.delete_model(name)
    return model
