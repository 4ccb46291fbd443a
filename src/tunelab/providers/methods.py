"""OpenAI's training `method` object and tunelab's training settings, in one place.

OpenAI's jobs say what they optimise in `method`: `{"type": "dpo", "dpo": {"hyperparameters":
{"beta": 0.1, "n_epochs": 2}}}`. tunelab's settings are `TrainConfig`'s flat names, where the
method is `training_method` and DPO's beta is `dpo_beta` (`method` already names lora|full).
The server reads the object into settings, `job_object` writes it back from a job's settings,
and hosted providers get OpenAI's names again: every front end agrees because each goes
through here.
"""

from __future__ import annotations

from collections.abc import Mapping

SUPERVISED = "supervised"
# The methods a job may name; reinforcement jobs also carry a grader.
METHOD_TYPES = ("supervised", "dpo", "reinforcement")
# In a reinforcement job's metadata, whichever provider holds it: its grader, as JSON text.
GRADER_KEY = "tunelab_grader"
# OpenAI's hyperparameter names that tunelab's settings call otherwise, per method.
_RENAMED = {"dpo": {"beta": "dpo_beta"}}
# Each method's own hyperparameters, shown in its `method` object beside OpenAI's three.
_OWN = {"dpo": ("beta",)}


def method_of(settings: Mapping) -> str:
    """The training method that a job's settings name (supervised when none)."""
    return str(settings.get("training_method") or SUPERVISED)


def settings_from_method(method_type: str, hyperparameters: Mapping) -> dict:
    """tunelab's settings for OpenAI's `method.<type>.hyperparameters` (values as given)."""
    renames = _RENAMED.get(method_type, {})
    settings = {renames.get(name, name): value for name, value in hyperparameters.items()}
    if method_type != SUPERVISED:
        settings["training_method"] = method_type
    return settings


def openai_hyperparameters(settings: Mapping) -> tuple[str, dict]:
    """The method and the hyperparameters under OpenAI's names, for a provider that takes
    OpenAI's request (the reverse of `settings_from_method`)."""
    method = method_of(settings)
    names = {ours: theirs for theirs, ours in _RENAMED.get(method, {}).items()}
    given = {names.get(k, k): v for k, v in settings.items() if k != "training_method"}
    return method, given


def method_object(settings: Mapping, shown: Mapping, grader: Mapping | None = None) -> dict:
    """OpenAI's `method` object for a job: `shown` are its three hyperparameters as
    resolved, plus the method's own (e.g. DPO's beta) from its settings or "auto", and a
    reinforcement job's grader."""
    method, given = openai_hyperparameters(settings)
    hyperparameters = {**shown, **{name: given.get(name, "auto") for name in _OWN.get(method, ())}}
    section: dict = {"hyperparameters": hyperparameters}
    if grader is not None:
        section["grader"] = dict(grader)
    return {"type": method, method: section}


def describe_method(settings: Mapping) -> str:
    """The method in words for tables: `supervised`, or `dpo (beta 0.2)`."""
    method, given = openai_hyperparameters(settings)
    own = ", ".join(f"{name} {given.get(name, 'auto')}" for name in _OWN.get(method, ()))
    return f"{method} ({own})" if own else method
