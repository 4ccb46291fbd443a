"""Evaluation runs: recorded in the registry and written as JSON and a self-contained HTML report.

`record_run` opens the run (status running), calls the task, stores every scored answer and
the metrics, writes `result.json` and `report.html` (to `--output-dir`, by default
`$TUNELAB_HOME/evals/<run id>/`), and marks the run succeeded, or failed with the error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tunelab.errors import TunelabError
from tunelab.io import atomic_write_text
from tunelab.registry import EvalOutput, EvalRun, Store
from tunelab.settings import get_settings

Task = Callable[[], tuple[dict, dict[str, list[dict]]]]


def record_run(
    kind: str,
    *,
    models: list[str],
    data: dict,
    options: dict,
    task: Task,
    output_dir: Path | None = None,
) -> dict:
    """Run `task` (→ metrics, outputs per model) as a recorded evaluation; returns the result."""
    with Store() as store:
        run = store.create_eval_run(kind, models=models, data=data, options=options)
    try:
        metrics, outputs = task()
    except BaseException as err:
        message = err.message if isinstance(err, TunelabError) else f"{type(err).__name__}: {err}"
        with Store() as store:
            store.update_eval_run(run.id, status="failed", error_message=message,
                                  finished_at=int(time.time()))  # fmt: skip
        raise
    result = {"id": run.id, "kind": kind, "created_at": run.created_at, "data": data,
              "options": options, "models_evaluated": models, **metrics}  # fmt: skip
    paths = write_result(result, outputs, output_dir or default_dir(run.id))
    # A task that ran but scored nothing says why in `metrics["error"]`: the run is failed,
    # with its result and report kept so the reasons can be read.
    outcome = {"status": "failed", "error_message": metrics["error"]} if metrics.get("error") \
        else {"status": "succeeded"}  # fmt: skip
    with Store() as store:
        for model, rows in outputs.items():
            store.add_eval_outputs(run.id, model, rows)
        store.update_eval_run(run.id, metrics=metrics, finished_at=int(time.time()),
                              **outcome, **paths)  # fmt: skip
    return {**result, **paths}


def default_dir(run_id: str) -> Path:
    return get_settings().home / "evals" / run_id


def write_result(result: dict, outputs: dict[str, list[dict]], directory: Path) -> dict:
    from tunelab.evals.report import render_report

    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "result.json", directory / "report.html"
    full = {**result, "outputs": outputs}
    atomic_write_text(json_path, orjson.dumps(full, option=orjson.OPT_INDENT_2).decode() + "\n")
    atomic_write_text(html_path, render_report(full))
    return {"json_path": str(json_path), "html_path": str(html_path)}


def list_runs(limit: int = 50, kind: str | None = None) -> list[EvalRun]:
    with Store() as store:
        return store.list_eval_runs(limit=limit, kind=kind)


def get_run(run_id: str) -> EvalRun:
    with Store() as store:
        return store.get_eval_run(run_id)


def run_outputs(run_id: str, model: str | None = None) -> list[EvalOutput]:
    with Store() as store:
        return store.list_eval_outputs(run_id, model)
