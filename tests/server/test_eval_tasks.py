"""Studio evaluation tasks report what the recorded run became, not always "succeeded"."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tunelab.evals.result import EvaluationResult
from tunelab.server.ui import eval_tasks
from tunelab.server.ui.eval_tasks import EvalRequest, EvalTasks


def _finished(metrics: dict, monkeypatch) -> eval_tasks.EvalTask:
    result = EvaluationResult(
        id="evalrun-x",
        kind="classify",
        created_at=0,
        data={},
        options={},
        models=("a", "b"),
        metrics=metrics,
    )
    monkeypatch.setattr(eval_tasks, "_record", lambda task: result)
    task = EvalTasks().start(EvalRequest("classify", Path("data.jsonl"), ["a", "b"]))
    deadline = time.monotonic() + 10
    while task.status == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    return task


def test_a_complete_run_succeeds(monkeypatch):
    task = _finished({"models": {}}, monkeypatch)
    assert (task.status, task.run_id, task.error) == ("succeeded", "evalrun-x", None)


@pytest.mark.parametrize(
    ("metrics", "status", "message"),
    [
        (
            {"partial": {"scored": {"a": 40, "b": 12}, "n_items": 40}},
            "partial",
            "cancelled: 12 of 40 items scored by every model (a: 40, b: 12)",
        ),
        ({"error": "no item could be scored"}, "failed", "no item could be scored"),
    ],
)
def test_a_partial_or_empty_run_says_so(metrics, status, message, monkeypatch):
    task = _finished(metrics, monkeypatch)
    assert (task.status, task.run_id, task.error) == (status, "evalrun-x", message)
