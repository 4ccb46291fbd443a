"""Work the studio starts from a form (an evaluation, a generation of conversations): run in
a background thread of the server, never in a request, and followed on a progress page that
polls it and moves on to what it made once it has succeeded.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tunelab.errors import TunelabError
from tunelab.server.ui import web


class BackgroundTask(Protocol):
    """What the board and the pages read of a task: its id, where it stands, why it
    failed, and the event that asks it to stop."""

    id: str
    status: str
    error: str | None
    cancel: threading.Event


Task = TypeVar("Task", bound=BackgroundTask)
Board = TypeVar("Board", bound="TaskBoard")


class TaskBoard(ABC, Generic[Task]):
    """The tasks of one kind this server has started, by id; each runs `perform` in a
    thread of its own, which sets the task's outcome."""

    noun = "task"  # what the "not found" message calls one
    state_name = "tasks"  # the server's attribute (`app.state`) holding the board

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}

    @classmethod
    def of(cls: type[Board], request: Request) -> Board:
        """The server's board of this kind, made on first use."""
        state = request.app.state
        if not hasattr(state, cls.state_name):
            setattr(state, cls.state_name, cls())
        return getattr(state, cls.state_name)

    @abstractmethod
    def perform(self, task: Task) -> None:
        """Do the task's work in its thread (each kind of task says what that is)."""

    def launch(self, task: Task) -> Task:
        self.tasks[task.id] = task
        threading.Thread(target=self._run, args=(task,), daemon=True, name=task.id).start()
        return task

    def get(self, task_id: str) -> Task:
        if task_id not in self.tasks:
            raise TunelabError("not_found", f"no {self.noun} in progress {task_id!r}.")
        return self.tasks[task_id]

    def _run(self, task: Task) -> None:
        try:
            self.perform(task)
        except BaseException as err:  # the thread's end: the page shows what went wrong
            task.status = "cancelled" if task.cancel.is_set() else "failed"
            task.error = (
                err.message if isinstance(err, TunelabError) else f"{type(err).__name__}: {err}"
            )


def add_task_routes(
    router: APIRouter,
    base: str,
    board: Callable[[Request], TaskBoard],
    template: str,
    nav: str,
    made: str,
) -> None:
    """Add a kind of task's progress page, `GET {base}/{task_id}`, and its
    `POST {base}/{task_id}/cancel` to `router`; `board(request)` holds the tasks."""

    @router.get(base + "/{task_id}")
    def task_page(request: Request, task_id: str):
        return progress_page(request, board(request), task_id, template, nav, made)

    @router.post(base + "/{task_id}/cancel")
    def task_cancel(request: Request, task_id: str):
        return cancel(request, board(request), task_id, f"{base}/{task_id}")


def progress_page(
    request: Request,
    board: TaskBoard[Task],
    task_id: str,
    template: str,
    nav: str,
    made: str,
):
    """The task's page (its `_`-prefixed fragment when htmx polls), or, once the task has
    succeeded, a redirect of the polling page to what it made (`made`, a format string of
    `task`, e.g. "/evals/{task.run_id}")."""
    try:
        task = board.get(task_id)
    except TunelabError as err:
        return web.error_page(request, err, 404)
    polled = bool(request.headers.get("hx-request"))
    if task.status == "succeeded" and polled:
        response = HTMLResponse("")
        response.headers["HX-Redirect"] = made.format(task=task)
        return response
    return web.page(request, f"_{template}" if polled else template, nav=nav, task=task)


def cancel(request: Request, board: TaskBoard, task_id: str, page_url: str):
    """Ask the task to stop, and go back to its page."""
    try:
        board.get(task_id).cancel.set()
    except TunelabError as err:
        return web.error_page(request, err, 404)
    return web.see_other(page_url)
