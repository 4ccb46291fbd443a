"""Compare: `tunelab eval` of the old `ft:` model against its replacement, on the validation file.

The task is chosen from the validation answers unless given: MongoDB queries when most of
them parse as queries, classification when they are a few short labels, otherwise a
pairwise LLM judge (which needs `judge`). The run is recorded like any `tunelab eval` run,
the old model first (the baseline), so `tunelab eval show` and the UI list it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.errors import TunelabError
from tunelab.evals.items import EvalData, load_items
from tunelab.migrate.dates import require_answering, utc_today
from tunelab.migrate.inventory import openai_jobs, registered_file
from tunelab.migrate.plan import migration_job
from tunelab.registry import Store

if TYPE_CHECKING:
    from tunelab.evals.result import EvaluationResult

TASKS = ("classify", "queries", "judge")
MAX_LABEL_WORDS = 4


def choose_task(data: EvalData) -> str:
    """`queries`, `classify` or `judge`, from what the gold answers look like."""
    from tunelab.evals.mongo.parser import QueryParseError, parse_query

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
    progress=None,
    cancel=None,
) -> EvaluationResult:
    """Evaluate the old model and its migration job's model; returns the recorded result."""
    from tunelab.evals import runs

    require_answering(today or utc_today(), f"comparing with {fine_tuned_model}")
    new_model, val_path = _pair(fine_tuned_model)
    data = load_items(val_path, "chat", limit=limit)
    task = task or choose_task(data)
    if task == "judge" and not judge:
        raise TunelabError(
            "judge_needed",
            "the validation answers are free text: comparing them needs a judge model.",
            hint="pass --judge MODEL, or --task classify / --task queries",
            exit_code=2,
        )
    models = [fine_tuned_model, new_model]
    options = {
        "limit": limit,
        "migration": {"old": fine_tuned_model, "new": new_model},
        **({"judge": judge, "mode": "pairwise"} if task == "judge" else {}),
    }
    kind = "pairwise" if task == "judge" else task
    return runs.record_run(
        kind,
        models=models,
        data=data.describe(),
        options=options,
        task=lambda: _evaluate(task, data, models, judge, progress, cancel),
    )


def _pair(fine_tuned_model: str) -> tuple[str, Path]:
    """The replacement's model name and the validation file, or a clear error."""
    from tunelab.providers.jobs import get_job

    with Store() as store:
        jobs = [j for j in openai_jobs(store) if j.fine_tuned_model == fine_tuned_model]
        if not jobs:
            raise TunelabError(
                "model_not_found",
                f"no OpenAI fine-tune {fine_tuned_model} in the registry.",
                hint="run `tunelab migrate openai inventory`",
            )
        val = registered_file(store, jobs[0].validation_file)
        migration = migration_job(store, jobs[0])
    if val is None:
        raise TunelabError(
            "no_validation_file",
            f"{fine_tuned_model} was trained without a "
            "validation file (or it was deleted): nothing to compare on.",
        )
    if migration is None:
        raise TunelabError(
            "not_migrated",
            f"{fine_tuned_model} has no migration job yet.",
            hint="`tunelab migrate openai run` creates it",
        )
    job = get_job(migration["id"])
    if job.status != "succeeded" or not job.fine_tuned_model:
        raise TunelabError(
            "migration_not_done",
            f"the migration job {job.id} is {job.status}.",
            hint=f"`tunelab jobs wait {job.id}`",
        )
    return job.fine_tuned_model, Path(val.path)


def _evaluate(task, data, models, judge, progress, cancel):
    if task == "classify":
        from tunelab.evals.classify import evaluate_classification

        return evaluate_classification(data, models, progress=progress, cancel=cancel)
    if task == "queries":
        from tunelab.evals.mongo.task import evaluate_queries

        return evaluate_queries(data, models, progress=progress, cancel=cancel)
    from tunelab.evals.judge import task as judging
    from tunelab.evals.judge.verdicts import DEFAULT_TRAITS

    sets = [
        judging.answers_from_model(m, data, max_tokens=512, progress=progress, cancel=cancel)
        for m in models
    ]
    return judging.judge_pairwise(
        judge, sets, list(DEFAULT_TRAITS), None, progress=progress, cancel=cancel
    )
