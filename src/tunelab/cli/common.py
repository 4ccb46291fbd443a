"""Shared CLI plumbing: the consoles, error rendering, exit codes, JSON output.

Flags shared by several commands live in `options`, progress displays in `progress`,
what several commands print in `render`, Ctrl-C handling in `cancel`.
"""

from __future__ import annotations

import errno
import sqlite3
import sys

import click
import orjson
from rich.console import Console

from tunelab.errors import TunelabError

# Exit codes: 0 success, 1 the input has errors / the operation failed, 2 usage error.
EXIT_USAGE = 2

# Piped or redirected, output goes to programs and logs: tables must not wrap at 80 columns
# mid-word, so such a console is as wide as its longest line.
PIPED_WIDTH = 10_000
stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
stderr = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else PIPED_WIDTH)


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


def environment_error(err: OSError | sqlite3.Error) -> TunelabError:
    """A file system or database refusal that reached the front end, as one clear line.

    Commands check their outputs up front; this is the net for whatever the machine still
    refuses on the way (a read-only mount, a full disk, a file that is not a database).
    """
    if isinstance(err, sqlite3.Error):
        return TunelabError(
            "database_error",
            f"a SQLite database could not be used: {err}.",
            hint="check TUNELAB_HOME and the database files given",
        )
    where = err.filename or "a file"
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return TunelabError(
            "not_writable" if err.errno == errno.EROFS else "permission_denied",
            f"{where}: {err.strerror or 'not allowed'}.",
            hint="choose a writable place (an output flag, or TUNELAB_HOME for tunelab's "
            "own files), or make this one writable",
        )
    if err.errno == errno.ENOSPC:
        return TunelabError(
            "disk_full",
            f"{where}: no space left on the device.",
            hint="free some space, or write somewhere else",
        )
    return TunelabError("os_error", f"{where}: {err.strerror or err}.")


def run_cli(group: click.Group, argv: list[str]) -> int:
    """Run the click group, turning TunelabError into a one-line message and exit code."""
    try:
        result = group.main(args=argv, prog_name="tunelab", standalone_mode=False)
    except (TunelabError, OSError, sqlite3.Error) as err:
        err = err if isinstance(err, TunelabError) else environment_error(err)
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
