"""`tunelab worker`: run queued local jobs (started by `jobs create`, or by hand for more)."""

from __future__ import annotations

import click

from tunelab.cli import common
from tunelab.evals.graders.reward import reward_for
from tunelab.providers.local import worker


@click.command("worker")
@click.option(
    "--exit-when-idle",
    type=click.FloatRange(min=0),
    help="Exit after this many seconds with no queued job (default: run until stopped).",
)
@click.option(
    "--auto",
    "auto",
    is_flag=True,
    help="Run as the machine's automatic worker (one at a time; exits when the queue is empty).",
)
def worker_cmd(exit_when_idle: float | None, auto: bool) -> int:
    """Run queued local fine-tuning jobs, one after another. Ctrl-C stops it."""
    if auto:
        done = worker.run_auto_worker(rewards=reward_for)
    else:
        common.stderr.print("worker running; Ctrl-C to stop", highlight=False)
        done = worker.run_worker(exit_when_idle=exit_when_idle, rewards=reward_for)
    common.stderr.print(f"worker done: ran {done} job(s)", highlight=False)
    return 0
