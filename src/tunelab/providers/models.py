"""Models on every provider: the base models tunelab knows and the ones jobs produced.

`chat_target` turns a model name into where it answers: a local directory for the engine,
or a hosted provider and the provider's model name. `tunelab chat`, the server and
evaluation all resolve names here, so an `ft:` name works wherever a model is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.catalog import CATALOG, CATALOG_AS_OF
from tunelab.errors import TunelabError
from tunelab.registry import Store
from tunelab.settings import get_settings


@dataclass(frozen=True)
class ChatTarget:
    provider: str  # "local" or a hosted provider
    model: str  # for local: a name or path `load_base` accepts; else the provider's name
    base_url: str | None = None


def list_models(*, provider: str | None = None, kind: str | None = None) -> list[dict]:
    """Fine-tuned models from the registry, newest first, then the catalog's base models."""
    with Store() as store:
        tuned = [_fine_tuned(row) for row in store.list_models(provider)]
    base = [
        {
            "id": spec.name,
            "object": "model",
            "created": None,
            "owned_by": spec.provider,
            "provider": spec.provider,
            "kind": "base",
            "base_model": None,
            "job_id": None,
            "path": None,
            "aliases": list(spec.aliases),
            "catalog_as_of": CATALOG_AS_OF,
        }
        for spec in CATALOG
        if provider is None or spec.provider == provider
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


def chat_target(name: str) -> ChatTarget:
    """Where `name` answers: registry models first, then hosted catalog names, else local."""
    known = None
    if get_settings().registry_path.exists():  # no registry yet: nothing fine-tuned
        with Store() as store:
            known = store.find_model(name)
    if known is not None:
        if known["provider"] == "local":
            return ChatTarget("local", known["path"])
        base_url = (known["details"] or {}).get("base_url")
        return ChatTarget(known["provider"], known["id"], base_url)
    if name.startswith("ft:"):
        raise TunelabError(
            "model_not_found",
            f"no model {name} in the registry.",
            hint="`tunelab models list` shows the models tunelab knows",
            exit_code=2,
        )
    for spec in CATALOG:
        if spec.provider != "local" and name.lower() in (
            spec.name.lower(),
            *(a.lower() for a in spec.aliases),
        ):
            return ChatTarget(spec.provider, spec.name)
    return ChatTarget("local", name)


def delete_model(name: str) -> dict:
    """Forget a fine-tuned model (a local one's files stay where its job wrote them)."""
    with Store() as store:
        model = store.get_model(name)
        store.delete_model(name)
    return model
