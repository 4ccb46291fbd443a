"""Shared CLI plumbing: error rendering, exit codes, JSON output."""

from __future__ import annotations

import sys

import click
import orjson
from rich.console import Console

from tunelab.errors import TunelabError

# Exit codes: 0 success, 1 the input has errors / the operation failed, 2 usage error.
EXIT_USAGE = 2

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def print_error(err: TunelabError) -> None:
    where = err.location()
    prefix = f"{where}: " if where else ""
    stderr.print(
        f"[bold red]error[/] [dim]\\[{err.code}][/] {prefix}{err.message}", highlight=False
    )
    if err.hint:
        stderr.print(f"  [cyan]hint:[/] {err.hint}", highlight=False)


def print_json(data: object) -> None:
    """JSON for machines on stdout: no colour, no wrapping."""
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def run_cli(group: click.Group, argv: list[str]) -> int:
    """Run the click group, turning TunelabError into a one-line message and exit code."""
    try:
        result = group.main(args=argv, prog_name="tunelab", standalone_mode=False)
    except TunelabError as err:
        print_error(err)
        return err.exit_code
    except click.exceptions.Abort:
        stderr.print("aborted")
        return 130
    except click.ClickException as err:
        err.show()
        return EXIT_USAGE if isinstance(err, click.UsageError) else err.exit_code
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except KeyboardInterrupt:
        stderr.print("interrupted")
        return 130
    # A command may return its exit code (e.g. `validate` returns 1 when the file has errors).
    return result if isinstance(result, int) else 0
