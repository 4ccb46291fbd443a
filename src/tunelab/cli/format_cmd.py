"""`tunelab format`."""

import click


@click.command("format")
def format_cmd() -> None:
    """(being built)"""
    raise click.UsageError("not built yet")
