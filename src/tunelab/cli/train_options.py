"""The training flags of `tunelab train` and `tunelab jobs create`, read from TrainConfig.

Every TrainConfig field is a flag (its docstring is the help, its annotation the type); every
one accepts `auto`, meaning tunelab's default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from types import UnionType
from typing import Literal, Union, get_args, get_origin, get_type_hints

import click

from tunelab.engine.config import AUTO, TrainConfig, field_help

# The interface contract's flags first in --help, then the rest in TrainConfig's order.
FIRST_FLAGS = ("method", "n_epochs", "batch_size", "learning_rate_multiplier", "max_steps", "seed")

UNSET = object()  # `--max-grad-norm none` is None: "not given" needs a value of its own


class Setting(click.ParamType):
    """A number (or one of `choices`), or `auto` for tunelab's default; `none` where allowed."""

    def __init__(
        self, kind=None, choices: tuple[str, ...] = (), none: bool = False, word: str = ""
    ) -> None:
        self.kind, self.choices, self.none = kind, choices, none
        words = [*choices] if choices else [word or ("N" if kind is int else "X")]
        self.name = "|".join([*words, "auto", *(["none"] if none else [])])

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{self.name}]" if self.choices else self.name

    def convert(self, value, param, ctx):
        if value is UNSET:
            return UNSET
        text = str(value).strip().lower()
        if text == AUTO:
            return AUTO
        if self.none and text == "none":
            return None
        if self.choices:
            if text in self.choices:
                return text
            self.fail(f"{value!r} is not one of {', '.join(self.choices)} or auto", param, ctx)
        if self.kind is str:
            return str(value)
        if self.kind is bool:
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            self.fail(f"{value!r} is not true, false or auto", param, ctx)
        try:
            return self.kind(text)
        except ValueError:
            kind = "an integer" if self.kind is int else "a number"
            self.fail(f"{value!r} is not {kind} or auto", param, ctx)


BOOLEAN = Setting(bool, word="true|false")


def setting_type(setting: dataclasses.Field, hint) -> Setting:
    """The flag type of a TrainConfig field, read from its annotation: a `Literal`'s words,
    true/false, a comma-separated list, or a number; `none` where None is allowed but is not
    the default (`--max-grad-norm none`)."""
    kinds = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    words = [word for kind in kinds if get_origin(kind) is Literal for word in get_args(kind)]
    if words:
        return Setting(choices=tuple(word for word in words if word != AUTO))
    if bool in kinds:
        return BOOLEAN
    if any(get_origin(kind) is tuple for kind in kinds):
        return Setting(str, word="NAME,...")
    none = type(None) in kinds and setting.default is not None
    return Setting(int if int in kinds else float, none=none)


_HINTS = get_type_hints(TrainConfig)
SETTING_TYPES = {
    setting.name: setting_type(setting, _HINTS[setting.name]) for setting in fields(TrainConfig)
}


def setting_options(command):
    """One `--flag` per TrainConfig field, with the field's docstring as help."""
    helps = field_help()
    names = [f.name for f in fields(TrainConfig)]
    ordered = [*FIRST_FLAGS, *(n for n in names if n not in FIRST_FLAGS)]
    for name in reversed(ordered):
        option = click.option(
            f"--{name.replace('_', '-')}",
            name,
            type=SETTING_TYPES[name],
            default=UNSET,
            show_default=False,
            help=helps[name],
        )
        command = option(command)
    return command


def given_settings(settings: dict) -> dict:
    """The settings flags the user gave: unset ones left out."""
    return {name: value for name, value in settings.items() if value is not UNSET}


def nproc_option(help_text: str):
    """`--nproc-per-node N`: processes training on this machine (torchrun when N > 1)."""
    return click.option(
        "--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True, help=help_text
    )
