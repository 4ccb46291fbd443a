"""Fixtures for engine tests, over the tiny models of `tests/tiny.py`."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from tiny import QUESTIONS, build_model, build_tokenizer
from tunelab.data.example import ChatExample, chat
from tunelab.engine import TrainConfig


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    """Shared: tests must not modify it (use `make_tokenizer` for one to change)."""
    return build_tokenizer()


@pytest.fixture
def make_tokenizer():
    return build_tokenizer


@pytest.fixture
def make_model(tokenizer):
    """A fresh tiny model: the same weights for the same seed."""
    return lambda seed=0: build_model(tokenizer, seed)


@pytest.fixture
def examples() -> list[ChatExample]:
    return [chat(q, a, source_line=i) for i, (q, a) in enumerate(QUESTIONS, 1)]


@pytest.fixture
def fast_config():
    return _fast_config


def _fast_config(**changes) -> TrainConfig:
    """A config for quick, exactly reproducible test runs."""
    settings = dict(
        batch_size=4,
        n_epochs=2,
        learning_rate=1e-2,
        lr_scheduler="constant",
        warmup_steps=0,
        precision="fp32",
        lora_rank=4,
        lora_alpha=8,
        lora_dropout=0.0,
    )
    settings.update(changes)
    return TrainConfig(**settings)
