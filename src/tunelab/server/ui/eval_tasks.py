"""Evaluations started from the studio run in a background thread of the server (never in a
request, `background.TaskBoard`), recorded in the registry like `tunelab eval`'s; the page
follows their progress.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.evals import runs
from tunelab.evals.classify import evaluate_classification
from tunelab.evals.items import load_items
from tunelab.evals.judge import task as judging
from tunelab.evals.judge.verdicts import traits_named
from tunelab.evals.mongo.task import evaluate_queries
from tunelab.evals.result import EvaluationResult
from tunelab.server.ui.background import TaskBoard
from tunelab.server.ui.workspace import new_id

KINDS = ("classify", "queries", "judge", "pairwise")


@dataclass
class EvalRequest:
    kind: str
    data_path: Path
    models: list[str]
    limit: int | None = None
    judge_model: str | None = None
    judge_max_tokens: int = judging.JUDGE_MAX_TOKENS
    traits: list[str] = field(default_factory=list)


@dataclass
class EvalTask:
    """One evaluation in flight: answers done per model, then the recorded run's id."""

    id: str
    request: EvalRequest
    status: str = "running"  # running, succeeded, partial, failed, cancelled
    progress: dict = field(default_factory=dict)  # model → [done, total]
    run_id: str | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    cancel: threading.Event = field(default_factory=threading.Event)

    def tracker(self, name: str, total: int):
        self.progress[name] = [0, total]

        def advance(n: int) -> None:
            self.progress[name][0] += n

        return advance


class EvalTasks(TaskBoard[EvalTask]):
    noun = "evaluation"
    state_name = "eval_tasks"

    def start(self, request: EvalRequest) -> EvalTask:
        if request.kind not in KINDS:
            raise TunelabError("invalid_form", f"unknown evaluation {request.kind!r}.")
        if not request.models:
            raise TunelabError("invalid_form", "Choose at least one model to evaluate.")
        if request.kind in ("judge", "pairwise") and not request.judge_model:
            raise TunelabError("invalid_form", "A judge evaluation needs a judge model.")
        if request.kind == "pairwise" and len(request.models) < 2:
            raise TunelabError("invalid_form", "A pairwise evaluation compares two models.")
        return self.launch(EvalTask(new_id("evaltask"), request))

    def perform(self, task: EvalTask) -> None:
        result = _record(task)
        # A run cancelled part-way is recorded as partial, one that scored nothing as failed:
        # the task says so rather than "succeeded" (the page then stays, with the report link).
        outcome = runs.outcome_of(result.metrics)
        task.run_id, task.status = result.id, outcome["status"]
        task.error = outcome.get("error_message")


def _record(task: EvalTask) -> EvaluationResult:
    r = task.request
    try:
        data = load_items(r.data_path, None, None, r.limit)
        options = _options(r)
    except TunelabError as err:  # recorded all the same: the list of runs shows it failed
        described = {"path": str(r.data_path), "n_items": None}
        failed = runs.record_failure(
            r.kind, models=r.models, data=described, options={"limit": r.limit}, error=err
        )
        task.run_id = failed.id
        raise

    def progress(name: str, total: int):
        return task.tracker(name, total)

    if r.kind == "classify":

        def compute():
            return evaluate_classification(data, r.models, progress=progress, cancel=task.cancel)
    elif r.kind == "queries":

        def compute():
            return evaluate_queries(
                data, r.models, executor=None, progress=progress, cancel=task.cancel
            )
    else:
        compute = _judge(task, data, progress)
    return runs.record_run(
        r.kind, models=r.models, data=data.describe(), options=options, task=compute
    )


def _options(r: EvalRequest) -> dict:
    """The run's options as `tunelab eval` records them."""
    options: dict = {"limit": r.limit}
    if r.kind == "classify":
        options["method"] = "score"  # label scoring, as `tunelab eval classify` by default
    if r.kind in ("judge", "pairwise"):
        options.update(
            judge=r.judge_model,
            mode="single" if r.kind == "judge" else "pairwise",
            traits=[t.name for t in _traits(r.traits)],
            rubric=None,
            judge_max_tokens=r.judge_max_tokens,
        )
    return options


def _judge(task: EvalTask, data, progress):

    r = task.request

    def compute():
        sets = [
            judging.answers_from_model(
                m, data, max_tokens=256, progress=progress, cancel=task.cancel
            )
            for m in r.models
        ]
        run = judging.judge_single if r.kind == "judge" else judging.judge_pairwise
        setup = judging.JudgeSetup(r.judge_model, _traits(r.traits), None, r.judge_max_tokens)
        return run(setup, sets, progress=progress, cancel=task.cancel)

    return compute


def _traits(names: list[str]):

    return traits_named(names)
