"""OpenAI's `method` object read into tunelab's settings and written back, unchanged."""

from __future__ import annotations

from tunelab.engine.config import TrainConfig
from tunelab.providers.methods import method_object, openai_hyperparameters, settings_from_method


def test_a_dpo_method_becomes_settings_the_trainer_takes_and_back():
    settings = settings_from_method("dpo", {"beta": 0.25, "n_epochs": 2})
    assert settings == {"dpo_beta": 0.25, "n_epochs": 2, "training_method": "dpo"}
    config = TrainConfig.from_settings(settings)
    assert (config.training_method, config.dpo_beta) == ("dpo", 0.25)
    assert openai_hyperparameters(settings) == ("dpo", {"beta": 0.25, "n_epochs": 2})
    shown = method_object(settings, {"n_epochs": 2, "batch_size": 4})
    assert shown == {
        "type": "dpo",
        "dpo": {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "beta": 0.25}},
    }


def test_supervised_settings_name_no_method_and_show_as_supervised():
    assert settings_from_method("supervised", {"n_epochs": 3}) == {"n_epochs": 3}
    assert method_object({}, {"n_epochs": 3}) == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 3}},
    }
    assert method_object({"training_method": "dpo"}, {})["dpo"]["hyperparameters"] == {
        "beta": "auto"
    }
