"""Models on every provider: the base models each provider offers, the ones jobs produced,
and aliases (a name, such as a retired OpenAI `ft:` model's, that answers as another model).

Which backend answers a name, aliases followed, is `tunelab.providers.resolve`'s business.
"""

from __future__ import annotations

from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.catalog import CATALOG_AS_OF
from tunelab.errors import usage_error
from tunelab.providers.registry import provider_classes
from tunelab.registry import Model, ModelAlias

ALIAS = "alias"  # the `kind` of an alias in model lists


def list_models(
    *, provider: str | None = None, kind: str | None = None, with_aliases: bool = False
) -> list[Model]:
    """Fine-tuned models from the registry, newest first, then the providers' base models;
    `with_aliases`: the aliases first (kind "alias", their target in `details["alias_of"]`)."""
    with job_registry.Store() as store:
        tuned = store.list_models(provider)
        aliases = store.list_aliases() if with_aliases else []
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
    known = [*tuned, *base]
    shown = [*_alias_models(aliases, known, provider), *known]
    return [m for m in shown if kind is None or m.kind == kind]


def _alias_models(aliases: list[ModelAlias], known: list[Model], provider: str | None):
    """Each alias as a model of its target's provider (one whose target is gone: "unknown")."""
    for alias in aliases:
        target = _known_model(alias.target, known)
        if provider is not None and (target is None or target.provider != provider):
            continue
        yield Model(
            id=alias.alias,
            provider=target.provider if target else "unknown",
            kind=ALIAS,
            created_at=alias.created_at,
            base_model=target.base_model if target else None,
            details={"alias_of": alias.target},
        )


def _known_model(name: str, known: list[Model]) -> Model | None:
    """The model `name` names: a registry model's id, a base model's id or alias."""
    wanted = name.lower()
    for model in known:
        if model.id == name or (
            model.kind == "base" and wanted in (n.lower() for n in [model.id, *model.aliases])
        ):
            return model
    return None


def add_alias(alias: str, target: str) -> ModelAlias:
    """Make `alias` answer as `target`, a model tunelab knows (`tunelab models list`).

    An alias may take the name of a registry model (an old `ft:` model, the point of it),
    never a base model's: the bundled and catalog names keep meaning what they say.
    """
    alias, target = alias.strip(), target.strip()
    known = list_models()
    if not alias or alias == target:
        raise usage_error("invalid_alias", f"cannot alias {alias!r} to {target!r}.")
    named = _known_model(alias, known)
    if named is not None and named.kind == "base":
        raise usage_error("invalid_alias", f"{alias} is a base model's name; choose another alias.")
    if _known_model(target, known) is None:
        raise usage_error(
            "model_not_found",
            f"cannot alias {alias} to {target}: no such model.",
            hint="`tunelab models list` shows the models tunelab knows",
        )
    with job_registry.Store() as store:
        return store.put_alias(alias, target)


def remove_alias(alias: str) -> ModelAlias:
    """Forget an alias: its name answers as it did before (or not at all)."""
    with job_registry.Store() as store:
        return store.delete_alias(alias.strip())


def list_aliases() -> list[ModelAlias]:
    with job_registry.Store() as store:
        return store.list_aliases()


def delete_model(name: str) -> Model:
    """Forget a fine-tuned model (a local one's files stay where its job wrote them)."""
    with job_registry.Store() as store:
        model = store.get_model(name)
        store.delete_model(name)
    return model
