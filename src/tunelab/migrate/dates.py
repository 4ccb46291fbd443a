"""OpenAI's fine-tuning shutdown: how many days are left, and the steps that need it.

OpenAI accepts no new fine-tuning jobs from 2027-01-06, and fine-tuned gpt-4o, gpt-4o-mini
and gpt-4.1 models stop answering on 2027-01-14. Every migration command takes `today`
(tests inject it; the CLI has a hidden `--today`), says what is left, and the steps that
need OpenAI refuse with a clear message once their date has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Closure:
    """One part of OpenAI's service that closes on `day`, and how a step needing it refuses."""

    day: date
    code: str
    refusal: str  # formatted with the refused {step} and the closing {day}
    hint: str

    def require_open(self, today: date, step: str) -> None:
        if today >= self.day:
            raise TunelabError(
                self.code, self.refusal.format(step=step, day=self.day), hint=self.hint
            )


ANSWERING = Closure(
    MODELS_STOP,
    "openai_models_stopped",
    "{step} needs the old fine-tuned model to answer, and OpenAI's fine-tuned models stopped "
    "answering on {day}.",
    "`tunelab migrate openai plan` and `run` still work from the registry, and `compare` uses "
    "the answers `distil` recorded",
)
NEW_JOBS = Closure(
    NO_NEW_JOBS,
    "openai_fine_tuning_closed",
    "{step} would create a fine-tuning job on OpenAI, which takes no new jobs since {day}.",
    "choose a local or Together target (`--target local`, `--target together`)",
)


def require_answering(today: date, step: str) -> None:
    """Refuse `step` (it asks the old ft: model) once fine-tuned models have stopped."""
    ANSWERING.require_open(today, step)


def require_new_jobs(today: date, step: str) -> None:
    """Refuse `step` (it creates an OpenAI job) once OpenAI takes no new jobs."""
    NEW_JOBS.require_open(today, step)
