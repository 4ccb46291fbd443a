"""Which providers exist: the built-in ones and plugins, all registered through one hook.

A module (built in, or named by a plugin's entry point in the `tunelab.providers` group)
defines `register_providers(register)` and calls `register(ProviderClass)` for each
provider it brings. The built-in modules are registered exactly as plugins are, before them;
a plugin cannot replace a built-in name.
"""

from __future__ import annotations

import importlib
import logging
import threading
from importlib.metadata import entry_points

from tunelab.errors import usage_error
from tunelab.providers.provider import Provider
from tunelab.types import LOCAL_PROVIDER

ENTRY_POINT_GROUP = "tunelab.providers"
# Jobs, models and names with no provider of their own belong to this machine.
DEFAULT_PROVIDER = LOCAL_PROVIDER
BUILTIN_MODULES = (
    "tunelab.providers.local.provider",
    "tunelab.providers.hosted.openai",
    "tunelab.providers.hosted.together",
    "tunelab.providers.hosted.anthropic",
    "tunelab.providers.hosted.compatible",
)
log = logging.getLogger(__name__)

_classes: dict[str, type[Provider]] | None = None
_shared: dict[tuple, Provider] = {}  # the one_per_process providers' instances
_shared_lock = threading.Lock()


def provider_classes() -> dict[str, type[Provider]]:
    """Every registered provider class by name, built-in ones first (loaded once)."""
    global _classes
    if _classes is None:
        found: dict[str, type[Provider]] = {}
        for module in BUILTIN_MODULES:
            importlib.import_module(module).register_providers(_registrar(found, module))
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            _load_plugin(entry, found)
        _classes = found
    return _classes


def _load_plugin(entry, found: dict[str, type[Provider]]) -> None:
    """Register one plugin's providers; a broken plugin is logged, not fatal."""
    try:
        hook = entry.load()
        hook = getattr(hook, "register_providers", hook)  # a module or the function itself
        hook(_registrar(found, entry.value))
    except Exception as err:  # a plugin's bug must not take tunelab down with it
        log.warning("provider plugin %s failed to load: %s", entry.value, err)


def _registrar(found: dict[str, type[Provider]], origin: str):
    def register(cls: type[Provider]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise TypeError(f"{origin}: {cls!r} is not a tunelab Provider subclass")
        if cls.name in found:
            log.warning("%s: provider %r is already registered; ignored", origin, cls.name)
            return
        found[cls.name] = cls

    return register


def reload_providers() -> None:
    """Forget the registered classes (tests install plugins at run time)."""
    global _classes
    _classes = None
    _shared.clear()


def provider_names(capability: str | None = None) -> list[str]:
    """Registered providers, optionally only those offering `capability`."""
    return [
        name
        for name, cls in provider_classes().items()
        if capability is None or cls.supports(capability)
    ]


def provider_class(name: str) -> type[Provider]:
    cls = provider_classes().get(name)
    if cls is None:
        raise usage_error(
            "unknown_provider",
            f"unknown provider {name!r}; choose one of {', '.join(provider_classes())}.",
            hint="`tunelab providers list` shows them",
        )
    return cls


def get_provider(
    name: str, *, base_url: str | None = None, key_variable: str | None = None
) -> Provider:
    """The provider `name`, for its own service or the endpoint at `base_url`.

    Keys are read from the environment or `.env` when the provider needs one. A provider
    that is `one_per_process` (this machine's: its loaded models and generation queue) is
    built once and shared.
    """
    cls = provider_class(name)
    if not cls.one_per_process:
        return cls(base_url=base_url, key_variable=key_variable)
    with _shared_lock:
        key = (name, base_url, key_variable)
        if key not in _shared:
            _shared[key] = cls(base_url=base_url, key_variable=key_variable)
        return _shared[key]


def check_provider(name: str) -> None:
    """Raise `unknown_provider` unless `name` is registered."""
    provider_class(name)


def this_machine() -> str:
    """The registry's name for this machine's provider: its jobs, files and models."""
    return DEFAULT_PROVIDER


def runs_here(name: str) -> bool:
    """Whether the provider `name` trains and keeps its models on this machine (False for a
    name no installed provider registers, such as an uninstalled plugin's)."""
    cls = provider_classes().get(name)
    return cls is not None and cls.runs_here
