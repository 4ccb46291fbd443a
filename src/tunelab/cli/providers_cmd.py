"""`tunelab providers`: what each provider can do, and named OpenAI-compatible endpoints."""

from __future__ import annotations

import os

import click
from rich.markup import escape
from rich.table import Table

from tunelab.cli import common
from tunelab.cli.options import json_option
from tunelab.errors import redact_urls
from tunelab.providers import endpoints as api
from tunelab.providers.health import check
from tunelab.providers.provider import CAPABILITIES
from tunelab.providers.registry import provider_classes


@click.group("providers")
def providers_group() -> None:
    """Providers (built in and plugins) and named OpenAI-compatible endpoints."""


@providers_group.command("list")
@json_option("Print providers and endpoints as JSON.")
def list_cmd(as_json: bool) -> int:
    """Each provider's capabilities and key variable; each named endpoint."""
    providers = [
        {
            "name": name,
            "title": cls.title,
            "capabilities": sorted(cls.capabilities),
            "key_variable": cls.key_variable,
            "key_set": bool(cls.key_variable and os.environ.get(cls.key_variable)),
        }
        for name, cls in provider_classes().items()
    ]
    endpoints = [{**vars(e), "base_url": redact_urls(e.base_url)} for e in api.list_endpoints()]
    if as_json:
        common.print_json({"providers": providers, "endpoints": endpoints})
        return 0
    table = Table("provider", *CAPABILITIES, "key")
    for p in providers:
        marks = ["✓" if c in p["capabilities"] else "" for c in CAPABILITIES]
        key = p["key_variable"] and f"{p['key_variable']} ({'set' if p['key_set'] else 'unset'})"
        table.add_row(p["name"], *marks, key or "")
    common.stdout.print(table)
    if endpoints:
        table = Table("endpoint", "base URL", "key variable")
        for e in endpoints:
            table.add_row(e["name"], escape(e["base_url"]), e["key_variable"] or "(none)")
        common.stdout.print(table)
    return 0


@providers_group.command("add")
@click.argument("name")
@click.argument("base_url")
@click.option("--key-env", help="Variable holding this endpoint's key (the name, not the key).")
@click.option("--replace", is_flag=True, help="Replace an endpoint of the same name.")
def add_cmd(name: str, base_url: str, key_env: str | None, replace: bool) -> int:
    """Name an OpenAI-compatible endpoint: then `NAME/MODEL` chats with MODEL there."""
    endpoint = api.add_endpoint(name, base_url, key_env, replace=replace)
    common.stdout.print(
        f"✓ {endpoint.name} → {escape(redact_urls(endpoint.base_url))}  "
        f"(chat with {endpoint.name}/MODEL)",
        highlight=False,
    )
    return 0


@providers_group.command("remove")
@click.argument("name")
def remove_cmd(name: str) -> int:
    """Forget a named endpoint."""
    api.remove_endpoint(name)
    common.stdout.print(f"✓ removed {name}", highlight=False)
    return 0


@providers_group.command("check")
@click.argument("name")
@click.option("--model", help="Model to ask (default: the first one it offers).")
@json_option("Print the verdict as JSON.")
def check_cmd(name: str, model: str | None, as_json: bool) -> int:
    """Ask provider or endpoint NAME for one token; one line says whether it answered."""
    result = check(name, model)
    if as_json:
        common.print_json(vars(result))
    else:
        (common.stdout if result.ok else common.stderr).print(result.line(), highlight=False)
    return 0 if result.ok else 1
