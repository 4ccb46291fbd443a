"""`tunelab jobs import`: track a job started outside tunelab (a provider's console, a script).

A command of the `jobs` group, registered on it where the CLI is assembled.
"""

from __future__ import annotations

import click
from rich.markup import escape

from tunelab.cli import common
from tunelab.cli.options import json_option
from tunelab.providers import jobs as api
from tunelab.providers.wire import job_object


@click.command("import")
@click.argument("job_id")
@click.option(
    "--provider",
    type=click.Choice(api.PROVIDERS),
    required=True,
    help="The provider the job runs on.",
)
@click.option("--base-url", help="The provider's endpoint, if not its default.")
@click.option("--key-env", help="Variable holding the key for --base-url.")
@json_option("Print the job object as JSON.")
def import_cmd(job_id, provider, base_url, key_env, as_json) -> int:
    """Record JOB_ID (the provider's id) in the registry: its status, events, metrics and the
    model it made then show in `jobs show`, `jobs events`, `models list` and `chat`."""
    job = api.import_job(provider, job_id, base_url=base_url, key_variable=key_env)
    if as_json:
        common.print_json(job_object(job))
        return 0
    made = f", model {escape(job.fine_tuned_model)}" if job.fine_tuned_model else ""
    common.stdout.print(
        f"[green]✓ imported[/] {job.id} ({provider} {escape(job_id)}): {job.status}{made}",
        highlight=False,
    )
    return 0
