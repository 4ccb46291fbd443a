"""The training flags' types come from `TrainConfig`'s field annotations."""

from __future__ import annotations

from dataclasses import fields

import click
import pytest

from tunelab.cli.train_options import SETTING_TYPES
from tunelab.engine.config import AUTO, PRECISIONS, TrainConfig


def test_every_config_field_has_a_flag_type_read_from_its_annotation():
    assert set(SETTING_TYPES) == {f.name for f in fields(TrainConfig)}
    assert SETTING_TYPES["precision"].choices == tuple(p for p in PRECISIONS if p != AUTO)
    assert SETTING_TYPES["batch_size"].convert("8", None, None) == 8
    assert SETTING_TYPES["lora_alpha"].convert("16", None, None) == 16.0
    assert SETTING_TYPES["use_liger_kernel"].convert("on", None, None) is True
    assert SETTING_TYPES["lora_target_modules"].convert("q_proj,v_proj", None, None) == (
        "q_proj,v_proj"
    )


def test_none_is_a_word_only_where_it_differs_from_the_default():
    assert SETTING_TYPES["max_grad_norm"].convert("none", None, None) is None  # default 1.0
    with pytest.raises(click.BadParameter):
        SETTING_TYPES["learning_rate"].convert("none", None, None)  # default None already


def test_a_word_outside_a_literal_field_is_refused():
    with pytest.raises(click.BadParameter, match="ddp, fsdp or auto"):
        SETTING_TYPES["distributed"].convert("zero3", None, None)
