from __future__ import annotations

from dataclasses import fields

import pytest

from tunelab.engine import ResolvedConfig, TrainConfig, field_help
from tunelab.errors import TunelabError


def test_validation_reports_every_problem_at_once_in_flag_terms():
    config = TrainConfig(
        method="qlora",
        n_epochs=0,
        batch_size=-2,
        learning_rate=1e-4,
        learning_rate_multiplier=2.0,
        lora_dropout=1.5,
        warmup_ratio=0.1,
        warmup_steps=5,
        max_seq_len="long",
    )
    with pytest.raises(TunelabError) as caught:
        config.validate()
    err = caught.value
    assert err.code == "invalid_config"
    for expected in (
        "--method must be one of lora, full",
        "--n-epochs must be an integer ≥ 1 or auto",
        "--batch-size must be an integer ≥ 1 or auto",
        "Can't provide both --learning-rate and --learning-rate-multiplier",
        "Can't provide both --warmup-ratio and --warmup-steps",
        "--lora-dropout must be",
        "--max-seq-len must be an integer ≥ 2 or auto",
    ):
        assert expected in err.message


def test_a_valid_config_has_no_problems():
    assert TrainConfig().problems() == []
    assert TrainConfig(method="full", n_epochs=2, batch_size=8, max_steps=10).problems() == []


def test_learning_rates_past_one_are_refused_given_or_multiplied():
    assert "--learning-rate must be a number > 0 and ≤ 1.0 (got 1e+308)" in (
        TrainConfig(learning_rate=1e308).problems()
    )
    assert TrainConfig(learning_rate=1.0).problems() == []
    [multiplied] = TrainConfig(learning_rate_multiplier=1e4).problems()
    assert multiplied.startswith("--learning-rate-multiplier 10000 makes a learning rate of 5 ")
    assert TrainConfig(method="full", learning_rate_multiplier=1e4).problems() == []  # 0.2
    assert TrainConfig(weight_decay=2.0).problems() and TrainConfig(lora_alpha=1e5).problems()


def test_batch_smaller_than_accumulation_is_refused():
    problems = TrainConfig(batch_size=2, gradient_accumulation_steps=4).problems()
    assert any(
        "--batch-size (2) must be at least --gradient-accumulation-steps" in p for p in problems
    )


@pytest.mark.parametrize(("n_examples", "epochs"), [(10, 10), (3, 25), (100, 3), (20_000, 1)])
def test_auto_epochs_follow_the_cookbook_rule(n_examples, epochs):
    assert TrainConfig().resolve(n_examples, 2048).n_epochs == epochs


@pytest.mark.parametrize(("n_examples", "batch"), [(50, 1), (5_000, 10), (100_000, 32)])
def test_auto_batch_size_is_a_fraction_of_the_examples(n_examples, batch):
    assert TrainConfig().resolve(n_examples, 2048).batch_size == batch


def test_auto_batch_size_covers_gradient_accumulation():
    assert TrainConfig(gradient_accumulation_steps=4).resolve(50, 2048).batch_size == 4


def test_learning_rate_depends_on_method_and_multiplier():
    assert TrainConfig().resolve(100, 2048).learning_rate == pytest.approx(5e-4)
    assert TrainConfig(method="full").resolve(100, 2048).learning_rate == pytest.approx(2e-5)
    halved = TrainConfig(learning_rate_multiplier=0.5).resolve(100, 2048)
    assert halved.learning_rate == pytest.approx(2.5e-4)
    assert TrainConfig(learning_rate=3e-3).resolve(100, 2048).learning_rate == 3e-3


def test_max_seq_len_auto_is_the_context_capped_at_2048():
    assert TrainConfig().resolve(10, 8192).max_seq_len == 2048
    assert TrainConfig().resolve(10, 512).max_seq_len == 512
    assert TrainConfig().resolve(10, None).max_seq_len == 2048
    assert TrainConfig(max_seq_len=100).resolve(10, 8192).max_seq_len == 100


def test_steps_warmup_and_max_steps():
    resolved = TrainConfig(batch_size=4, n_epochs=10).resolve(1000, 2048)
    assert (resolved.steps_per_epoch, resolved.total_steps) == (250, 2500)
    assert resolved.warmup_steps == 75  # the default 3%
    assert resolved.eval_every == 250
    capped = TrainConfig(batch_size=4, n_epochs=10, max_steps=30, warmup_steps=50)
    assert capped.resolve(1000, 2048).total_steps == 30
    assert capped.resolve(1000, 2048).warmup_steps == 30


def test_auto_validation_never_costs_more_than_a_tenth_of_the_training_between_two():
    # The bundled TREC sample with batches of one for 10 steps used to validate its 121
    # examples at every step: ~50 s per step, almost all of it validation.
    small = TrainConfig(batch_size=1, max_steps=10).resolve(479, 2048, n_val_examples=121)
    assert small.eval_every > small.total_steps  # only the final full pass
    # Plenty of training per step: the usual ten evaluations per run.
    large = TrainConfig(batch_size=16, n_epochs=3).resolve(5000, 2048, n_val_examples=50)
    assert large.eval_every == large.total_steps // 10
    # A larger validation file spaces them out; the periodic sample is capped at 256.
    short = TrainConfig(batch_size=16, max_steps=200)
    assert short.resolve(5000, 2048, n_val_examples=50).eval_every == 20  # 200 // 10
    spaced = short.resolve(5000, 2048, n_val_examples=10_000).eval_every
    assert spaced == short.resolve(5000, 2048, n_val_examples=256).eval_every == 54
    assert (
        TrainConfig(eval_every=2, batch_size=1).resolve(479, 2048, n_val_examples=121).eval_every
        == 2
    )


def test_no_examples_is_an_error():
    with pytest.raises(TunelabError) as caught:
        TrainConfig().resolve(0, 2048)
    assert caught.value.code == "no_training_examples"


def test_resolved_config_round_trips_through_json_data():
    resolved = TrainConfig(lora_target_modules=("q_proj", "v_proj")).resolve(40, 2048, "cpu")
    data = resolved.to_dict()
    assert data["lora_target_modules"] == ["q_proj", "v_proj"]
    assert "auto" not in data.values()
    assert ResolvedConfig.from_dict(data) == resolved


def test_every_field_has_help_text():
    helps = field_help()
    assert set(helps) == {f.name for f in fields(TrainConfig)}
    assert "0.2%" in helps["batch_size"]
