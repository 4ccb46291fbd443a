"""One CLI: the same names for the same ideas, examples in every --help, checked up front."""

from __future__ import annotations

import shlex

import click
import pytest

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
