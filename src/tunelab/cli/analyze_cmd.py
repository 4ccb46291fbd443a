"""`tunelab analyze`."""

import click


@click.command("analyze")
def analyze_cmd() -> None:
    """(being built)"""
    raise click.UsageError("not built yet")
