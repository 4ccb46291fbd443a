"""Compare: `tunelab eval` of the old `ft:` model against its replacement, on the validation file.

The task is chosen from the validation answers unless given: MongoDB queries when most of
them parse as queries, classification when they are a few short labels, otherwise a
pairwise LLM judge (which needs `judge`). The run is recorded like any `tunelab eval` run,
the old model first (the baseline), so `tunelab eval show` and the UI list it.

The old model's side: when `distil` recorded its answers to the validation prompts, those
answers are its side (looked up by the prompt's SHA-256), with no call to OpenAI: always
after its models stop answering (on the prompts that were answered; none recorded is a
clear error), and before that whenever they cover every prompt compared, since asking
again costs money (`fresh=True` asks anyway). The run's options say which it was
(`old_answers`) and its notes say from which day's answers.

Classification answers both models the same way, so that the paired difference and
McNemar's test compare models, not methods: by label scoring when both give
log-likelihoods, otherwise (the old model is hosted, or its answers were recorded) both by
generation. The run's options (`method`) and notes say which.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.data.prompts import ClassificationPrompt
from tunelab.errors import TunelabError, usage_error
from tunelab.evals import runs
from tunelab.evals.candidates import RecordedCandidate, answering_from, open_candidate
from tunelab.evals.classify import evaluate_classification, gold_labels
from tunelab.evals.items import EvalData, load_items
from tunelab.evals.judge import task as judging
from tunelab.evals.judge.verdicts import DEFAULT_TRAITS
from tunelab.evals.mongo.parser import QueryParseError, parse_query
from tunelab.evals.mongo.task import evaluate_queries
from tunelab.migrate.dates import MODELS_STOP, utc_today
from tunelab.migrate.distil import distilled_paths, prompt_key, read_answers
from tunelab.migrate.inventory import openai_jobs, registered_file
from tunelab.migrate.plan import migration_job
from tunelab.providers.jobs import get_job
from tunelab.providers.resolve import alias_target
from tunelab.registry import Job, Store
from tunelab.types import Answer, Usage

if TYPE_CHECKING:
    from tunelab.evals.result import EvaluationResult

MAX_LABEL_WORDS = 4


def choose_task(data: EvalData) -> str:
    """`queries`, `classify` or `judge`, from what the gold answers look like."""

    golds = [item.gold.strip() for item in data.items]
    parsed = 0
    for gold in golds:
        try:
            parse_query(gold)
            parsed += 1
        except QueryParseError:
            pass  # not a query: counted by what `parsed` leaves out
    if parsed * 2 > len(golds):
        return "queries"
    distinct = set(golds)
    short = all(len(g.split()) <= MAX_LABEL_WORDS for g in distinct)
    if 2 <= len(distinct) <= max(2, len(golds) // 2) and short:
        return "classify"
    return "judge"


def compare(
    fine_tuned_model: str,
    *,
    task: str | None = None,
    judge: str | None = None,
    today: date | None = None,
    limit: int | None = None,
    judge_max_tokens: int = judging.JUDGE_MAX_TOKENS,
    fresh: bool = False,
    progress=None,
    cancel=None,
) -> EvaluationResult:
    """Evaluate the old model and its migration job's model; returns the recorded result.

    The old model answers from its distilled answers where the module docstring says so;
    `fresh` asks it again (refused once it has stopped answering).
    """

    today = today or utc_today()
    old_job, val_path = _old_job(fine_tuned_model)
    whole = load_items(val_path, "chat", limit=limit)
    data, old = _old_side(old_job, whole, today, fresh)  # `whole` or the items it answered
    new_model = _new_model(old_job)
    task = task or choose_task(whole)
    if task == "judge" and not judge:
        raise usage_error(
            "judge_needed",
            "the validation answers are free text: comparing them needs a judge model.",
            hint="pass --judge MODEL, or --task classify / --task queries",
        )
    models = [fine_tuned_model, new_model]
    options = {
        "limit": limit,
        "migration": {"old": fine_tuned_model, "new": new_model},
        "old_answers": old["described"],
        "notes": [old["note"]],
        **(
            {"judge": judge, "mode": "pairwise", "judge_max_tokens": judge_max_tokens}
            if task == "judge"
            else {}
        ),
    }
    kind = "pairwise" if task == "judge" else task
    labels = _labels(whole) if task == "classify" else None
    # A migration's judge compares pairwise, on the default traits and rubric.
    setup = (
        judging.JudgeSetup(judge, list(DEFAULT_TRAITS), None, judge_max_tokens) if judge else None
    )
    with answering_from(old["stand_in"] or _unaliased(fine_tuned_model)):
        method = _classification_method(models) if task == "classify" else None
        if method is not None:
            options["method"] = method
            options["notes"].append(_METHOD_NOTES[method])
        return runs.record_run(
            kind,
            models=models,
            data=data.describe(),
            options=options,
            task=lambda: _timed_only_if_asked(
                _evaluate(task, data, models, setup, progress, cancel, labels, method),
                old["stand_in"],
            ),
        )


def _unaliased(name: str) -> dict:
    """The old model itself when asked, though an alias has given its name to its
    replacement (`migrate openai run --alias`): the comparison is old against new."""
    if alias_target(name) is None:
        return {}
    return {name: open_candidate(name, follow_alias=False)}


_METHOD_NOTES = {
    "score": "both models answered by label scoring (each label's log-likelihood).",
    "generate": (
        "both models answered by generation: the old model gives no log-likelihoods to "
        "score labels with, and a paired comparison needs one method for both."
    ),
}


def _classification_method(models: list[str]) -> str:
    """`score` when every model gives log-likelihoods, else `generate` for all of them."""
    for name in models:
        candidate = open_candidate(name)
        try:
            if not candidate.gives_logprobs:
                return "generate"
        finally:
            candidate.close()
    return "score"


def _timed_only_if_asked(found, stand_ins: dict):
    """Recorded answers take no time to look up: their speed would say nothing of the model.
    (The judge's tasks, which still return a tuple, time no model.)"""
    models = getattr(found, "models", None)
    if not stand_ins or not isinstance(models, dict):
        return found
    untimed = {
        name: {**figures, "seconds": None, "answers_per_second": None}
        if name in stand_ins
        else figures
        for name, figures in models.items()
    }
    return replace(found, models=untimed)


def _labels(whole: EvalData) -> list[str] | None:
    """Classification's label set, from every item compared or not: a subset may lack some."""

    try:
        return gold_labels(whole, ClassificationPrompt())[1]
    except TunelabError:
        return None  # not classification data: the task says so itself


def _old_job(fine_tuned_model: str) -> tuple[Job, Path]:
    """The imported OpenAI job of the old model and its validation file, or a clear error."""
    with Store() as store:
        jobs = [j for j in openai_jobs(store) if j.fine_tuned_model == fine_tuned_model]
        if not jobs:
            raise TunelabError(
                "model_not_found",
                f"no OpenAI fine-tune {fine_tuned_model} in the registry.",
                hint="run `tunelab migrate openai inventory`",
            )
        val = registered_file(store, jobs[0].validation_file)
    if val is None:
        raise TunelabError(
            "no_validation_file",
            f"{fine_tuned_model} was trained without a "
            "validation file (or it was deleted): nothing to compare on.",
        )
    return jobs[0], Path(val.path)


def _new_model(old_job: Job) -> str:
    """The model of the job that replaces `old_job`'s, once it has succeeded."""

    with Store() as store:
        migration = migration_job(store, old_job)
    if migration is None:
        raise TunelabError(
            "not_migrated",
            f"{old_job.fine_tuned_model} has no migration job yet.",
            hint="`tunelab migrate openai run` creates it",
        )
    job = get_job(migration["id"])
    if job.status != "succeeded" or not job.fine_tuned_model:
        raise TunelabError(
            "migration_not_done",
            f"the migration job {job.id} is {job.status}.",
            hint=f"`tunelab jobs wait {job.id}`",
        )
    return job.fine_tuned_model


def _old_side(job: Job, data: EvalData, today: date, fresh: bool) -> tuple[EvalData, dict]:
    """The items to compare on, and where the old model's answers to them come from:
    `stand_in` (for `answering_from`), `described` (the run's options) and `note`."""

    name = job.fine_tuned_model
    paths = distilled_paths(name)
    recorded = read_answers(paths.answers)
    covered = [item for item in data.items if prompt_key(item.messages) in recorded]
    stopped = today >= MODELS_STOP
    if not stopped and (fresh or len(covered) < len(data.items)):
        return data, _asked(today, fresh, len(covered), len(data.items))
    if stopped and (fresh or not covered):
        raise _cannot_ask(name, fresh, bool(covered))
    used = {key: recorded[key] for key in (prompt_key(item.messages) for item in covered)}
    return replace(data, items=covered), _distilled(name, used, paths, len(data.items), stopped)


def _asked(today: date, fresh: bool, n_covered: int, n_items: int) -> dict:
    why = "--fresh" if fresh else f"its distilled answers cover {n_covered} of the {n_items}"
    return {
        "stand_in": {},
        "described": {"from": "asked", "on": today.isoformat()},
        "note": f"the old model's answers: asked on {today} ({why}).",
    }


def _distilled(name: str, used: dict[str, dict], paths, n_items: int, stopped: bool) -> dict:

    days = sorted({_day(record) for record in used.values()} - {None})
    when = " to ".join(dict.fromkeys([days[0], days[-1]])) if days else "an unknown day"
    why = (
        f"OpenAI's fine-tuned models stopped answering on {MODELS_STOP}"
        if stopped
        else "they cover every prompt; --fresh asks the model again"
    )
    left_out = n_items - len(used)
    note = f"the old model's answers: its distilled answers of {when} ({why})"
    if left_out:
        note += f"; {left_out} of the {n_items} validation items had none and are left out"
    answers = {key: _answer(record) for key, record in used.items()}
    return {
        "stand_in": {name: RecordedCandidate(name, answers, prompt_key)},
        "described": {
            "from": "distilled",
            "because": "models_stopped" if stopped else "covered",
            "answered_from": days[0] if days else None,
            "answered_to": days[-1] if days else None,
            "answers_file": str(paths.answers),
            "provenance": str(paths.provenance) if paths.provenance.exists() else None,
            "n_items": len(used),
            "n_left_out": left_out,
        },
        "note": note + ".",
    }


def _day(record: dict) -> str | None:
    stamp = record.get("answered_at")
    return datetime.fromtimestamp(stamp, timezone.utc).date().isoformat() if stamp else None


def _answer(record: dict) -> Answer:
    usage = Usage(record.get("prompt_tokens") or 0, record.get("completion_tokens") or 0)
    return Answer(record["answer"], record.get("finish_reason") or "stop", usage)


def _cannot_ask(name: str, fresh: bool, some_recorded: bool) -> TunelabError:
    if fresh and some_recorded:
        return usage_error(
            "openai_models_stopped",
            f"--fresh asks {name} again, and OpenAI's fine-tuned models stopped answering "
            f"on {MODELS_STOP}.",
            hint="drop --fresh: compare then uses the answers it gave when it was distilled",
        )
    return TunelabError(
        "openai_models_stopped",
        f"comparing with {name} needs its answers to the validation prompts: OpenAI's "
        f"fine-tuned models stopped answering on {MODELS_STOP}, and none of its answers "
        "to them were distilled before.",
        hint="`tunelab migrate openai distil` (or `run --distil`) before "
        f"{MODELS_STOP} would have kept them for this; the new model alone can still be "
        "evaluated with `tunelab eval`",
    )


def _evaluate(
    task, data, models, setup: judging.JudgeSetup | None, progress, cancel, labels=None, method=None
):
    """The run's scores; `setup` is the judge (judge task), `method` how classification
    answers (the same for every model)."""
    if task == "classify":
        return evaluate_classification(
            data, models, labels=labels, method=method or "score", progress=progress, cancel=cancel
        )
    if task == "queries":
        return evaluate_queries(data, models, progress=progress, cancel=cancel)

    sets = [
        judging.answers_from_model(m, data, max_tokens=512, progress=progress, cancel=cancel)
        for m in models
    ]
    assert setup is not None  # `compare` refused the judge task without a judge
    return judging.judge_pairwise(setup, sets, progress=progress, cancel=cancel)
