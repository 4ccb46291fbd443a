"""Named OpenAI-compatible endpoints: `$TUNELAB_HOME/endpoints.json`.

Each entry is a name, a base URL and, optionally, the NAME of the environment variable that
holds its key (never the key itself). `NAME/MODEL` then means MODEL on that endpoint, and the
key in that variable goes to that endpoint and nowhere else.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from tunelab.errors import TunelabError, usage_error
from tunelab.io import atomic_write_text
from tunelab.providers.registry import provider_classes
from tunelab.providers.urls import check_base_url
from tunelab.settings import get_settings

FILENAME = "endpoints.json"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    key_variable: str | None = None


def list_endpoints() -> list[Endpoint]:
    path = get_settings().home / FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise TunelabError(
            "endpoints_unreadable",
            f"{path} is not valid JSON: {err}",
            hint="fix or delete the file",
            path=path,
        ) from None
    return [Endpoint(e["name"], e["base_url"], e.get("key_variable")) for e in data["endpoints"]]


def find_endpoint(name: str) -> Endpoint | None:
    return next((e for e in list_endpoints() if e.name == name), None)


def add_endpoint(
    name: str, base_url: str, key_variable: str | None = None, *, replace: bool = False
) -> Endpoint:
    """Record an endpoint; an existing name is replaced only with `replace`."""

    _check(name, base_url, key_variable)
    if name in provider_classes():
        raise usage_error(
            "endpoint_name_taken", f"{name!r} is a provider's name.", hint="choose another name"
        )
    endpoints = list_endpoints()
    if any(e.name == name for e in endpoints) and not replace:
        raise usage_error(
            "endpoint_exists",
            f"an endpoint named {name!r} exists.",
            hint="pass --replace to change it",
        )
    endpoint = Endpoint(name, base_url.rstrip("/"), key_variable)
    _save([*(e for e in endpoints if e.name != name), endpoint])
    return endpoint


def remove_endpoint(name: str) -> Endpoint:
    endpoints = list_endpoints()
    found = next((e for e in endpoints if e.name == name), None)
    if found is None:
        raise usage_error(
            "endpoint_not_found",
            f"no endpoint named {name!r}.",
            hint="`tunelab providers list` shows them",
        )
    _save([e for e in endpoints if e.name != name])
    return found


def _check(name: str, base_url: str, key_variable: str | None) -> None:
    if not _NAME.fullmatch(name):
        raise usage_error(
            "invalid_endpoint_name",
            f"{name!r} is not a usable endpoint name.",
            hint="lower-case letters, digits, '-', '_' or '.'",
        )
    check_base_url(base_url, where=f"the URL of {name!r}")
    if key_variable is not None and not _VARIABLE.fullmatch(key_variable):
        raise usage_error(
            "invalid_key_variable",
            "--key-env takes the NAME of an environment variable, not a key.",
            hint="e.g. --key-env VLLM_API_KEY, with the key exported in that variable",
        )


def _save(endpoints: list[Endpoint]) -> None:
    home = get_settings().home
    home.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"endpoints": [asdict(e) for e in endpoints]}, indent=2) + "\n"
    atomic_write_text(home / FILENAME, text)
