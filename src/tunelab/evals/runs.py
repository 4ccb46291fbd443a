"""Evaluation runs: recorded in the registry and written as JSON and a self-contained HTML report.

`record_run` opens the run (status running), calls the task, stores every scored answer and
the metrics, writes `result.json` and `report.html` (to `--output-dir`, by default
`$TUNELAB_HOME/evals/<run id>/`; both hold the loss curves of the fine-tuned models
compared, see `tunelab.evals.training`), marks the run succeeded, partial (a cancel stopped
it: what was scored is kept, even nothing) or failed with the error, and returns an
`EvaluationResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from tunelab import registry as job_registry  # Store: SQLAlchemy loads on first use
from tunelab.errors import TunelabError
from tunelab.evals.candidates import Interrupted
from tunelab.evals.report import render_report
from tunelab.evals.result import EvaluationResult, TaskResult, partial_message
from tunelab.evals.training import training_curves
from tunelab.io import atomic_write_text
from tunelab.registry import EvalOutput, EvalRun
from tunelab.settings import get_settings

Task = Callable[[], TaskResult]

# The metrics that are shares of the items (shown as percentages).
FRACTIONS = (
    "accuracy",
    "macro_f1",
    "invalid_rate",
    "exact_match",
    "structural_match",
    "execution_match",
    "parse_failure_rate",
    "parse_rate",  # 1 - parse_failure_rate: a headline's "parsed"
    "pass_rate",
    "function_match",  # a tools run's steps
    "arguments_valid",
    "no_call_rate",
)
# Every model-level metric a run may hold, in the order tables of runs show them.
METRICS = (*FRACTIONS, "mean_score", "rating")
# The metric that heads each kind of run, best evidence first: execution match only exists
# when the queries were executed; a pairwise run's verdict is its ratings.
HEADLINE_METRICS = {
    "classify": ("accuracy",),
    "queries": ("execution_match", "exact_match"),
    "judge": ("mean_score",),
    "pairwise": ("rating",),
    "grade": ("mean_score",),
    "tools": ("exact_match",),
}


# Beside a queries run's headline metric, the steps on the way to a right query: when the
# models compared differ on one, it is headlined too (both models' exact match can be 0%
# while one parses every answer and gets most of each query's structure right).
QUERY_STEPS = ("structural_match", "parse_rate")
# How a headline with several metrics names each.
HEADLINE_NAMES = {
    "execution_match": "execution",
    "exact_match": "exact",
    "structural_match": "structural",
    "parse_rate": "parsed",
}


@dataclass(frozen=True)
class Headline:
    """The number per model a reader looks at first, and which metric it is; `also`: further
    metrics that moved between the models compared (a queries run's steps)."""

    metric: str | None
    values: dict[str, float]
    also: tuple[tuple[str, dict[str, float]], ...] = ()

    def text(self) -> str:
        """`model: value; ...`, a fraction as a percentage; with `also`, each metric named:
        `exact: a 0.0%, b 0.0%; parsed: a 40.0%, b 100.0%`."""
        if not self.also:
            return "; ".join(
                f"{name}: {format_metric(self.metric, v)}" for name, v in self.values.items()
            )
        return "; ".join(
            f"{HEADLINE_NAMES.get(metric or '', metric)}: "
            + ", ".join(f"{name} {format_metric(metric, v)}" for name, v in values.items())
            for metric, values in ((self.metric, self.values), *self.also)
        )


def format_metric(metric: str | None, value: float) -> str:
    if metric in FRACTIONS:
        return f"{value:.1%}"
    return f"{value:.0f}" if metric == "rating" else f"{value:.2f}"


def headline(run: EvalRun) -> Headline:
    """What heads `run` in every listing (the CLI's `eval list/show`, the studio's pages)."""
    per_model = EvaluationResult.from_run(run).scores
    for metric in HEADLINE_METRICS.get(run.kind, ("mean_score",)):
        values = _values(per_model, metric)
        if values:
            moved = _moved_steps(per_model) if run.kind == "queries" else ()
            return Headline(metric, values, moved)
    return Headline(None, {})


def _values(per_model: dict[str, dict], metric: str) -> dict[str, float]:
    """Each model's `metric`, where it has one (`parse_rate` from its parse failures)."""
    found = {}
    for name, scores in per_model.items():
        value = scores.get(metric)
        failures = scores.get("parse_failure_rate")
        if metric == "parse_rate" and isinstance(failures, (int, float)):
            value = 1 - failures
        if isinstance(value, (int, float)):
            found[name] = value
    return found


def _moved_steps(per_model: dict[str, dict]) -> tuple[tuple[str, dict[str, float]], ...]:
    """The QUERY_STEPS on which the models compared differ (at the precision shown)."""
    moved = []
    for metric in QUERY_STEPS:
        values = _values(per_model, metric)
        shown = {format_metric(metric, v) for v in values.values()}
        if len(values) > 1 and len(shown) > 1:
            moved.append((metric, values))
    return tuple(moved)


def record_run(
    kind: str,
    *,
    models: list[str],
    data: dict,
    options: dict,
    task: Task,
    output_dir: Path | None = None,
) -> EvaluationResult:
    """Run `task` (→ its figures and every scored answer) as a recorded evaluation; returns
    the result."""
    with job_registry.Store() as store:
        run = store.create_eval_run(kind, models=models, data=data, options=options)
    try:
        found = task()
    except Interrupted:  # cancelled before any score (a judge's candidates were answering)
        found = TaskResult(answers={}, partial=nothing_scored(kind, data, models))
    except BaseException as err:
        _mark_failed(run.id, err)
        raise
    metrics, outputs = found.metrics, found.answers
    result = EvaluationResult(
        id=run.id,
        kind=kind,
        created_at=run.created_at,
        data=data,
        options=options,
        models=tuple(models),
        metrics=metrics,
    )
    training = training_curves(models)
    paths = write_result(result, outputs, output_dir or default_dir(run.id), training)
    with job_registry.Store() as store:
        for model, rows in outputs.items():
            store.add_eval_outputs(run.id, model, rows)
        store.update_eval_run(
            run.id, metrics=metrics, finished_at=int(time.time()), **outcome_of(metrics), **paths
        )
    return replace(result, **paths)


def record_failure(
    kind: str, *, models: list[str], data: dict, options: dict, error: BaseException
) -> EvalRun:
    """Record a run that failed before its task could start (its data unreadable, say), so
    that it is listed with its error like a run that failed while scoring."""
    with job_registry.Store() as store:
        run = store.create_eval_run(kind, models=models, data=data, options=options)
    return _mark_failed(run.id, error)


def _mark_failed(run_id: str, err: BaseException) -> EvalRun:
    message = err.message if isinstance(err, TunelabError) else f"{type(err).__name__}: {err}"
    with job_registry.Store() as store:
        return store.update_eval_run(
            run_id, status="failed", error_message=message, finished_at=int(time.time())
        )


def outcome_of(metrics: dict) -> dict:
    """The run's status: a task that ran but scored nothing says why in `metrics["error"]`
    (failed, with its result and report kept so the reasons can be read); one cancelled
    part-way (`metrics["partial"]`) keeps what it scored as a partial run."""
    if metrics.get("error"):
        return {"status": "failed", "error_message": metrics["error"]}
    if metrics.get("partial"):
        return {"status": "partial", "error_message": partial_message(metrics["partial"])}
    return {"status": "succeeded"}


def nothing_scored(kind: str, data: dict, models: list[str]) -> dict:
    """The `partial` entry of a run cancelled before its first score."""
    judged = {"judged": True} if kind in ("judge", "pairwise") else {}
    return {"n_items": data.get("n_items") or 0, "scored": dict.fromkeys(models, 0), **judged}


def default_dir(run_id: str) -> Path:
    return get_settings().home / "evals" / run_id


def write_result(
    result: EvaluationResult,
    outputs: dict[str, list[dict]],
    directory: Path,
    training: dict[str, dict] | None = None,
) -> dict:
    """Writes `result.json` (the result with every scored answer and, under `training`, the
    loss curves of the fine-tuned models compared) and `report.html`."""

    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "result.json", directory / "report.html"
    full = {**result.to_dict(), "outputs": outputs} | ({"training": training} if training else {})
    atomic_write_text(json_path, orjson.dumps(full, option=orjson.OPT_INDENT_2).decode() + "\n")
    atomic_write_text(html_path, render_report(full))
    return {"json_path": str(json_path), "html_path": str(html_path)}


def list_runs(limit: int = 50, kind: str | None = None) -> list[EvalRun]:
    with job_registry.Store() as store:
        return store.list_eval_runs(limit=limit, kind=kind)


def get_run(run_id: str) -> EvalRun:
    with job_registry.Store() as store:
        return store.get_eval_run(run_id)


def run_outputs(run_id: str, model: str | None = None) -> list[EvalOutput]:
    with job_registry.Store() as store:
        return store.list_eval_outputs(run_id, model)
