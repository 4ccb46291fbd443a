"""One CLI: the same names for the same ideas, examples in every --help, checked up front."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import click
import pytest

import tunelab.cli
from tunelab.cli import cli, main
from tunelab.cli.examples import EXAMPLES, walk

COMMANDS = dict(walk(cli))


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: p or "tunelab")
def test_every_help_has_examples_that_parse(path):
    command = COMMANDS[path]
    assert "Examples:" in (command.help or ""), f"`tunelab {path} --help` has no examples"
    for example in EXAMPLES.get(path, ()):
        words = shlex.split(example)[1:]
        target, args = cli, words
        while isinstance(target, click.Group) and args and args[0] in target.commands:
            target, args = target.commands[args[0]], args[1:]
        if isinstance(target, click.Group):
            continue  # a group's example names one of its commands, checked there
        context = click.Context(target, info_name=target.name)
        target.make_parser(context).parse_args(args)  # unknown flags raise here


def test_output_system_and_temperature_have_one_name_and_one_range():
    for path, command in COMMANDS.items():
        for param in command.params:
            names = set(getattr(param, "opts", ()))
            if names & {"--output-dir", "--output"}:
                assert "--output" in names and "-o" in names, path
            if names & {"--system", "--system-prompt"}:
                assert {"--system", "--system-prompt", "-s"} <= names, path
            if "--temperature" in names:
                assert (param.type.min, param.type.max) == (0, 2), path


def test_old_spellings_work_but_are_not_shown(capsys):
    assert main(["eval", "classify", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--output-dir" not in shown and "-o, --output" in shown
    assert main(["chat", "--help"]) == 0
    assert "--system-prompt" not in capsys.readouterr().out


CLI_DIR = Path(tunelab.cli.__file__).parent


def command_modules_imported_by(source: str) -> set[str]:
    """The `*_cmd` modules of `tunelab.cli` that a module's source imports, in any spelling."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "tunelab.cli" if node.level else (node.module or "")
            module = f"{base}.{node.module}" if node.level and node.module else base
            names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {n for n in names if n.startswith("tunelab.cli.") and n.endswith("_cmd")}
    return found


def test_the_check_sees_every_spelling_of_a_command_import():
    source = (
        "from tunelab.cli.train_cmd import x\nfrom tunelab.cli import jobs_cmd\n"
        "import tunelab.cli.eval_cmd\nfrom .format_cmd import y\nfrom tunelab.cli import common\n"
    )
    assert command_modules_imported_by(source) == {
        "tunelab.cli.train_cmd",
        "tunelab.cli.jobs_cmd",
        "tunelab.cli.eval_cmd",
        "tunelab.cli.format_cmd",
    }


@pytest.mark.parametrize("path", sorted(CLI_DIR.glob("*_cmd.py")), ids=lambda p: p.name)
def test_command_modules_import_only_shared_modules(path):
    """A command module imports the shared CLI modules (options, progress, render, ...), never
    another command: what two commands share lives in one shared module."""
    imported = command_modules_imported_by(path.read_text())
    assert not imported, f"{path.name} imports {sorted(imported)}"
