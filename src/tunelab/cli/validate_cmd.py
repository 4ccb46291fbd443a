"""`tunelab validate`."""

import click


@click.command("validate")
def validate_cmd() -> None:
    """(being built)"""
    raise click.UsageError("not built yet")
