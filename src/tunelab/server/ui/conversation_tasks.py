"""Synthetic conversations made in the studio, as `tunelab generate-conversations` makes
them: a model answers one message per idea in a background thread of the server (never in a
request), the page follows its progress, and the conversation database becomes a studio
source that the Data page lists and formats.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.evals.conversations import (
    ConversationRecipe,
    generate_conversations,
    read_ideas,
)
from tunelab.server.ui import workspace
from tunelab.server.ui.background import TaskBoard

GENERATED_ORIGIN = "generated"  # a source the studio wrote: a conversation database


@dataclass
class GenerationRequest:
    """What the form asks for: the ideas file (with the name it was uploaded as) and the
    recipe, as the CLI's options of the same names."""

    ideas_path: Path
    ideas_name: str
    recipe: ConversationRecipe

    @property
    def model(self) -> str:
        return self.recipe.model


@dataclass
class GenerationTask:
    """One generation in flight: ideas answered so far, then the source it made."""

    id: str
    request: GenerationRequest
    total: int
    done: int = 0
    status: str = "running"  # running, succeeded, failed, cancelled
    source_id: str | None = None
    n_conversations: int = 0
    n_failed: int = 0
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def advance(self, n: int) -> None:
        self.done += n


class GenerationTasks(TaskBoard[GenerationTask]):
    noun = "generation"
    state_name = "generation_tasks"

    def start(self, request: GenerationRequest) -> GenerationTask:
        """Check the ideas (an unreadable file is refused here, on the form) and start."""
        if not request.recipe.template.strip():
            raise TunelabError("invalid_form", "The user message template is empty.")
        total = len(read_ideas(request.ideas_path))
        return self.launch(GenerationTask(workspace.new_id("gentask"), request, total))

    def perform(self, task: GenerationTask) -> None:
        _generate(task)
        # Every answer failed: no conversation to format, the page says why it stays.
        task.status = "succeeded" if task.n_conversations else "failed"
        if not task.n_conversations:
            task.error = f"{task.request.model} answered none of the {task.total} ideas."


def _generate(task: GenerationTask) -> None:
    """Write the database where uploads go and record it as a source of the studio's."""
    r = task.request
    name = workspace.safe_name(f"{Path(r.ideas_name).stem}_conversations.db")
    _, output = workspace.upload_target(name)
    result = generate_conversations(
        r.ideas_path, output, r.recipe, progress=task.advance, cancel=task.cancel
    )
    task.n_conversations, task.n_failed = result["n_conversations"], result["n_failed"]
    if task.n_conversations:
        task.source_id = workspace.add_source(output, name, GENERATED_ORIGIN)["id"]
