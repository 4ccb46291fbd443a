"""The `tunelab` command: a thin layer over the Python API.

Each command module parses flags, calls the API, and renders the result; a `TunelabError`
becomes one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys

import click

from tunelab import __version__
from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.cli.analyze_cmd import analyze_cmd
from tunelab.cli.chat_cmd import chat_cmd
from tunelab.cli.common import run_cli
from tunelab.cli.demo_cmd import demo_cmd
from tunelab.cli.eval_cmd import eval_group, generate_conversations_cmd
from tunelab.cli.examples import add_examples
from tunelab.cli.export_cmd import export_cmd
from tunelab.cli.format_cmd import format_cmd
from tunelab.cli.grade_cmd import grade_cmd
from tunelab.cli.jobs_cmd import jobs_group
from tunelab.cli.jobs_import_cmd import import_cmd
from tunelab.cli.migrate_cmd import migrate_group
from tunelab.cli.models_cmd import models_group
from tunelab.cli.providers_cmd import providers_group
from tunelab.cli.seed_flags import translate_seed_flags
from tunelab.cli.serve_cmd import serve_cmd
from tunelab.cli.train_cmd import train_cmd
from tunelab.cli.ui_cmd import ui_cmd
from tunelab.cli.validate_cmd import validate_cmd
from tunelab.cli.worker_cmd import worker_cmd
from tunelab.errors import TunelabError
from tunelab.providers.local.lost import recover_lost_jobs as recover
from tunelab.settings import get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tunelab")
def cli() -> None:
    """tunelab: fine-tune language models you own.

    Format raw data into chat JSONL, validate and analyze it, train, chat and evaluate.
    """


cli.add_command(format_cmd)
cli.add_command(validate_cmd)
cli.add_command(analyze_cmd)
cli.add_command(demo_cmd)
cli.add_command(train_cmd)
cli.add_command(chat_cmd)
cli.add_command(export_cmd)
jobs_group.add_command(import_cmd)
cli.add_command(jobs_group)
cli.add_command(models_group)
cli.add_command(providers_group)
cli.add_command(worker_cmd)
cli.add_command(serve_cmd)
cli.add_command(ui_cmd)
eval_group.add_command(grade_cmd)
cli.add_command(eval_group)
cli.add_command(generate_conversations_cmd)
cli.add_command(migrate_group)
add_examples(cli)


def main(argv: list[str] | None = None) -> int:
    # Recovery is a courtesy: a registry that cannot be used is reported by the command that
    # needs it (once, in its terms), and commands that do not need it still work.
    with contextlib.suppress(TunelabError, OSError, sqlite3.Error):
        recover_lost_jobs()
    return run_cli(cli, translate_seed_flags(argv if argv is not None else sys.argv[1:]))


def recover_lost_jobs() -> None:
    """Mark failed the local jobs whose worker died, so no command shows them running."""
    settings = get_settings()
    if not settings.database_url and not settings.registry_path.exists():
        return  # nothing has run yet; do not create a registry for `tunelab validate`
    with job_registry.Store() as store:
        recover(store)
