"""OpenAI's fine-tuning shutdown: how many days are left, and the steps that need it.

OpenAI accepts no new fine-tuning jobs from 2027-01-06, and fine-tuned gpt-4o, gpt-4o-mini
and gpt-4.1 models stop answering on 2027-01-14. Every migration command takes `today`
(tests inject it; the CLI has a hidden `--today`), says what is left, and the steps that
need OpenAI refuse with a clear message once their date has passed.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from tunelab.errors import TunelabError

NO_NEW_JOBS = date(2027, 1, 6)
MODELS_STOP = date(2027, 1, 14)


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def countdown(today: date) -> dict:
    """Days left before each date (negative once passed), for tables and `--json`."""
    return {
        "today": today.isoformat(),
        "no_new_jobs": NO_NEW_JOBS.isoformat(),
        "days_until_no_new_jobs": (NO_NEW_JOBS - today).days,
        "models_stop": MODELS_STOP.isoformat(),
        "days_until_models_stop": (MODELS_STOP - today).days,
    }


def countdown_line(today: date) -> str:
    """One sentence for the top of every command's output."""
    jobs, models = (NO_NEW_JOBS - today).days, (MODELS_STOP - today).days
    first = (
        f"{_days(jobs)} until OpenAI takes no new fine-tuning jobs ({NO_NEW_JOBS})"
        if jobs > 0
        else f"OpenAI has taken no new fine-tuning jobs since {NO_NEW_JOBS}"
    )
    second = (
        f"{_days(models)} until fine-tuned models stop answering ({MODELS_STOP})"
        if models > 0
        else f"fine-tuned models have not answered since {MODELS_STOP}"
    )
    return f"{first}; {second}."


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def require_answering(today: date, step: str) -> None:
    """Refuse `step` (it asks the old ft: model) once fine-tuned models have stopped."""
    if today >= MODELS_STOP:
        raise TunelabError(
            "openai_models_stopped",
            f"{step} needs the old fine-tuned model to answer, and OpenAI's fine-tuned "
            f"models stopped answering on {MODELS_STOP}.",
            hint="`tunelab migrate openai plan` and `run` still work from the registry, and "
            "`compare` uses the answers `distil` recorded",
        )


def require_new_jobs(today: date, step: str) -> None:
    """Refuse `step` (it creates an OpenAI job) once OpenAI takes no new jobs."""
    if today >= NO_NEW_JOBS:
        raise TunelabError(
            "openai_fine_tuning_closed",
            f"{step} would create a fine-tuning job on OpenAI, which takes no new jobs "
            f"since {NO_NEW_JOBS}.",
            hint="choose a local or Together target (`--target local`, `--target together`)",
        )
