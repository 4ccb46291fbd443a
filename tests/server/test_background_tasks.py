"""The studio's background tasks: a failure or a cancel ends the task with its reason, and
each kind's progress page polls it, redirects to what it made, and cancels it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tunelab.errors import TunelabError
from tunelab.evals.conversations import ConversationRecipe
from tunelab.server.app import ServerConfig, create_app
from tunelab.server.ui.background import TaskBoard
from tunelab.server.ui.conversation_tasks import GenerationRequest, GenerationTask, GenerationTasks
from tunelab.server.ui.eval_tasks import EvalRequest, EvalTask, EvalTasks


@dataclass
class Chore:
    id: str
    status: str = "running"
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class Failing(TaskBoard[Chore]):
    def perform(self, task: Chore) -> None:
        if task.cancel.is_set():
            raise KeyboardInterrupt
        raise TunelabError("broken", "the data is gone.")


def _ended(board: Failing, task: Chore) -> Chore:
    board.launch(task)
    deadline = time.monotonic() + 10
    while task.status == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    return task


def test_a_failed_task_says_why_and_a_cancelled_one_is_cancelled():
    board = Failing()
    assert (_ended(board, Chore("a")).status, board.get("a").error) == (
        "failed",
        "the data is gone.",
    )
    stopped = Chore("b")
    stopped.cancel.set()
    assert _ended(board, stopped).status == "cancelled"
    with pytest.raises(TunelabError, match="no task in progress 'c'"):
        board.get("c")


def _client_with(tasks: dict) -> TestClient:
    app = create_app(ServerConfig(start_worker=False))
    boards = {board.state_name: board for board in (EvalTasks(), GenerationTasks())}
    for state_name, task in tasks.items():
        board = boards[state_name]  # the server's own board of that kind
        board.tasks[task.id] = task
        setattr(app.state, state_name, board)
    return TestClient(app, base_url="http://localhost")


@pytest.mark.parametrize(
    ("state_name", "task", "base", "made"),
    [
        (
            "eval_tasks",
            EvalTask("evaltask-1", EvalRequest("classify", Path("d.jsonl"), ["m"]), run_id="r1"),
            "/evals/tasks",
            "/evals/r1",
        ),
        (
            "generation_tasks",
            GenerationTask(
                "gentask-1", GenerationRequest(Path("i"), "i", ConversationRecipe("m")), 3
            ),
            "/data/generate/tasks",
            "/data/sources/s1",
        ),
    ],
)
def test_a_task_page_follows_redirects_and_cancels(isolated_home, state_name, task, base, made):
    if isinstance(task, GenerationTask):
        task.source_id = "s1"
    c = _client_with({state_name: task})
    assert c.get(f"{base}/{task.id}").status_code == 200
    assert "HX-Redirect" not in c.get(f"{base}/{task.id}", headers={"HX-Request": "true"}).headers
    cancelled = c.post(f"{base}/{task.id}/cancel", follow_redirects=False)
    assert (cancelled.status_code, cancelled.headers["location"]) == (303, f"{base}/{task.id}")
    assert task.cancel.is_set()
    task.status = "succeeded"
    polled = c.get(f"{base}/{task.id}", headers={"HX-Request": "true"})
    assert polled.headers["HX-Redirect"] == made
    assert c.get(f"{base}/nope").status_code == 404
    assert c.post(f"{base}/nope/cancel").status_code == 404
