"""`tunelab demo`."""

import click


@click.command("demo")
def demo_cmd() -> None:
    """Run the main job on the bundled sample data."""
