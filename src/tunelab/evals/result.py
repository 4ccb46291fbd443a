"""What an evaluation returns: one typed result, whatever the task.

Each task (`evaluate_classification`, `evaluate_queries`, `judge_single`,
`judge_pairwise`) returns a `TaskResult` of its own kind: its figures as fields (metrics
per candidate included) and every scored answer. `record_run` records it and returns an
`EvaluationResult`; `EvaluationResult.from_run` reads one back from the registry's
`EvalRun`. Front ends (`tunelab eval`, `tunelab migrate openai compare`, the
demo, the studio) read its attributes; `to_dict()` is the JSON they print and the body of
`result.json`, in the shape tunelab has always written:
`{id, kind, created_at, data, options, models_evaluated, <the task's metrics>, json_path,
html_path}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from tunelab.registry import EvalRun


@dataclass(frozen=True, kw_only=True)
class TaskResult:
    """What an evaluation task returns. Each task's subclass adds its figures as fields, in
    the order result.json shows them; `metrics` is that JSON form."""

    # Every scored answer by candidate (a pairwise run's comparisons under "comparisons").
    answers: dict[str, list[dict]]
    # When a cancel left items unscored: `n_items`, and how many each candidate scored.
    partial: dict | None = None
    # Why nothing was scored (the run is then recorded as failed), or None.
    error: str | None = None

    @property
    def metrics(self) -> dict:
        """The figures as result.json and the registry hold them: the task's fields in
        order, then `partial` and `error`; a field that defaults to None only when set. The
        answers are stored apart."""
        last = ("partial", "error")
        order = [f for f in fields(self) if f.name not in ("answers", *last)]
        order += [f for f in fields(self) if f.name in last]
        return {
            f.name: getattr(self, f.name)
            for f in order
            if getattr(self, f.name) is not None or f.default is not None
        }


def partial_of(answers: dict[str, list], models: list[str], n_items: int) -> dict | None:
    """`partial` when a cancel left items unscored: how many items each model scored (the
    first ones, in order; 0 for a model never started); None when every item was."""
    scored = {name: len(answers.get(name, ())) for name in models}
    if all(n == n_items for n in scored.values()):
        return None
    return {"n_items": n_items, "scored": scored}


@dataclass(frozen=True)
class EvaluationResult:
    """One evaluation run's outcome: what was evaluated on what, and how each model scored."""

    id: str
    kind: str  # "classify", "queries", "judge" or "pairwise"
    created_at: int
    data: dict  # the evaluation data as `EvalData.describe()` gives it (path, n_items, ...)
    options: dict
    models: tuple[str, ...]
    # The task's figures as it returned them: per-model scores under "models" (ratings and
    # records for pairwise), plus what the task adds (comparisons, notes, judge, "error").
    metrics: dict = field(default_factory=dict)
    json_path: str | None = None  # None until the result is written
    html_path: str | None = None

    @classmethod
    def from_run(cls, run: EvalRun) -> EvaluationResult:
        """The result of a recorded run (metrics empty while it runs or when it failed early)."""
        metrics = dict(run.metrics or {})
        if run.status == "failed" and run.error_message and "error" not in metrics:
            metrics["error"] = run.error_message
        return cls(
            id=run.id,
            kind=run.kind,
            created_at=run.created_at,
            data=run.data or {},
            options=run.options or {},
            models=tuple(run.models),
            metrics=metrics,
            json_path=run.json_path,
            html_path=run.html_path,
        )

    @property
    def scores(self) -> dict[str, dict]:
        """Each model's scores by name: its metrics, or for a pairwise run its rating (with
        `low`, `high`) and its record (`wins`, `games`)."""
        if self.kind != "pairwise":
            return self.metrics.get("models") or {}
        ratings, records = self.metrics.get("ratings") or {}, self.metrics.get("records") or {}
        names = [n for n in self.models if n in ratings or n in records]
        names += [n for n in (*ratings, *records) if n not in names]
        return {n: {**ratings.get(n, {}), **records.get(n, {})} for n in names}

    @property
    def partial(self) -> dict | None:
        """When a cancel stopped the run part-way: `n_items` and how many items each model
        scored (`scored`); None for a whole run."""
        return self.metrics.get("partial")

    @property
    def error(self) -> str | None:
        """Why nothing was scored (the run is then recorded as failed), or None."""
        return self.metrics.get("error")

    def to_dict(self) -> dict:
        """The JSON form; the file paths only once the result has been written."""
        result = {
            "id": self.id,
            "kind": self.kind,
            "created_at": self.created_at,
            "data": self.data,
            "options": self.options,
            "models_evaluated": list(self.models),
            **self.metrics,
        }
        if self.json_path is not None:
            result["json_path"] = self.json_path
        if self.html_path is not None:
            result["html_path"] = self.html_path
        return result


def partial_message(partial: dict) -> str:
    """`cancelled: 12 of 40 items scored by every model (a: 40, b: 12)`; for a judge,
    `cancelled: 3 of 10 answers judged for every model (a: 10, b: 3)` or
    `cancelled: 7 of 20 comparisons judged`."""
    if "n_comparisons" in partial:
        return f"cancelled: {partial['n_judged']} of {partial['n_comparisons']} comparisons judged"
    scored = partial["scored"]
    least = min(scored.values(), default=0)
    each = ", ".join(f"{name}: {n}" for name, n in scored.items())
    what = "answers judged for" if partial.get("judged") else "items scored by"
    return f"cancelled: {least} of {partial['n_items']} {what} every model ({each})"
