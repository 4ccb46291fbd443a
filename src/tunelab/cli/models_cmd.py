"""`tunelab models`: base and fine-tuned models across providers."""

from __future__ import annotations

import click
from rich.markup import escape

from tunelab.cli import common
from tunelab.cli.options import json_option
from tunelab.cli.render import print_listing, short_name, when
from tunelab.providers import models as api
from tunelab.providers.local.artifacts import model_location
from tunelab.providers.registry import provider_names
from tunelab.registry import Model, ModelAlias


@click.group("models")
def models_group() -> None:
    """Models tunelab knows: the base models of each provider and every fine-tuned one."""


@models_group.command("list")
@click.option(
    "--provider", type=click.Choice(provider_names()), help="Only this provider's models."
)
@click.option("--fine-tuned", is_flag=True, help="Only fine-tuned models.")
@json_option("Print the models as JSON.")
def list_cmd(provider, fine_tuned, as_json) -> int:
    """Aliases, fine-tuned models (newest first), then base models."""
    models = api.list_models(
        provider=provider, kind="fine-tuned" if fine_tuned else None, with_aliases=True
    )
    if as_json:
        common.print_json({"object": "list", "data": [_model_json(m) for m in models]})
        return 0
    rows = [
        (
            escape(model.id),
            model.provider,
            _kind(model),
            escape(short_name(model.base_model)),
            when(model.created_at, short=True),
        )
        for model in models
    ]
    return print_listing(("model", "provider", "kind", "base model", "created"), rows)


def _kind(model: Model) -> str:
    if model.kind == api.ALIAS:
        return f"alias → {escape(model.details['alias_of'])}"
    return model.kind


def _model_json(model: Model) -> dict:
    """A model as OpenAI lists it, with tunelab's fields beside (the catalog's for base ones)."""
    shown = {
        "id": model.id,
        "object": "model",
        "created": model.created_at,
        "owned_by": model.provider,
        "provider": model.provider,
        "kind": model.kind,
        "base_model": model.base_model,
        "job_id": model.job_id,
        "path": model_location(model),
    }
    if model.kind == "base":
        return {**shown, "aliases": list(model.aliases), **model.details}
    if model.kind == api.ALIAS:
        return {**shown, "alias_of": model.details["alias_of"]}
    return {**shown, "details": model.details}


@models_group.command("alias")
@click.argument("alias", required=False)
@click.argument("target", required=False)
@click.option("--remove", is_flag=True, help="Forget the alias ALIAS.")
@json_option("Print the aliases (or the one made or removed) as JSON.")
def alias_cmd(alias, target, remove, as_json) -> int:
    """Make ALIAS (e.g. a retired `ft:` model's name) answer as TARGET, a model tunelab
    knows, everywhere a model is named: `serve`, `chat`, evaluations. Without arguments:
    the aliases."""
    if remove and (alias is None or target is not None):
        raise click.UsageError("--remove takes one argument: the alias to forget.")
    if not remove and (alias is None) != (target is None):
        raise click.UsageError("Give ALIAS and TARGET, or nothing to list the aliases.")
    if alias is None:
        return _print_aliases(api.list_aliases(), as_json)
    changed = api.remove_alias(alias) if remove else api.add_alias(alias, target)
    if as_json:
        common.print_json(changed.to_dict())
        return 0
    done = "removed the alias" if remove else "alias"
    common.stdout.print(
        f"{done} {escape(changed.alias)} → {escape(changed.target)}", highlight=False
    )
    return 0


def _print_aliases(aliases: list[ModelAlias], as_json: bool) -> int:
    if as_json:
        common.print_json({"object": "list", "data": [a.to_dict() for a in aliases]})
        return 0
    rows = [(escape(a.alias), escape(a.target), when(a.created_at, short=True)) for a in aliases]
    return print_listing(
        ("alias", "model", "created"), rows, "no aliases: `tunelab models alias OLD NEW`"
    )


@models_group.command("delete")
@click.argument("model")
def delete_cmd(model) -> int:
    """Forget a fine-tuned model (a local model's files are kept)."""
    removed = api.delete_model(model)
    where = f" (its files stay in {removed.path})" if removed.path else ""
    common.stdout.print(f"deleted {escape(model)}{escape(where)}", highlight=False)
    return 0
