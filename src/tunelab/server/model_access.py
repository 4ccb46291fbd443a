"""Which models a client may name: the server decides, not the client.

A client names a model by a string, and the server must not let that string reach its disk
(`"model": "/some/dir"` would load it; `"/etc"` would reveal which paths exist), the Hugging
Face Hub or another host. Served are: the registry's models (the operator's fine-tuned ones,
on any provider) and aliases (`tunelab models alias`), the bundled base model, and whatever
the operator lists (`tunelab serve --model NAME`, a directory, a Hub id or `MODEL@URL`).
`--allow-any-model` restores the old behaviour for a trusted network. Every refusal reads
the same, whatever the name points at.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.providers.models import list_models
from tunelab.providers.registry import runs_here
from tunelab.server.errors import ApiError


def check_served(name: str, config) -> None:
    """Raise OpenAI's 404 `model_not_found` unless `name` is served (see the docstring)."""
    if config.allow_any_model or _listed(name, config.models) or _known(name):
        return
    raise ApiError(
        404,
        f"The model '{name}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def check_offered(names: list[str], config) -> None:
    """The studio's forms: what its pickers offer (the registry and every provider's catalog)
    or what the API serves; a refusal is a `TunelabError` for the page to show."""
    offered = {model.id for model in list_models(with_aliases=True)}
    for name in names:
        if name in offered:
            continue
        try:
            check_served(name, config)
        except ApiError as refused:
            raise TunelabError("model_not_found", refused.message) from None


def _listed(name: str, listed: tuple[str, ...]) -> bool:
    """The operator listed `name`, or the same directory under another spelling."""
    if name in listed:
        return True
    wanted = _absolute(name)
    return wanted is not None and any(_absolute(item) == wanted for item in listed)


def _absolute(name: str) -> Path | None:
    """`name` as an absolute path, without touching the disk (no existence is revealed)."""
    if "@http" in name or not name.startswith(("/", ".", "~")):
        return None
    return Path(name).expanduser().absolute()


def _known(name: str) -> bool:
    """A registry model or alias, or a base model this machine runs (by id or alias)."""
    wanted = name.lower()
    try:
        models = list_models(with_aliases=True)
    except TunelabError:
        return False
    for model in models:
        if model.kind != "base" and model.id == name:
            return True
        if (
            model.kind == "base"
            and runs_here(model.provider)
            and wanted in (n.lower() for n in [model.id, *model.aliases])
        ):
            return True
    return False
