"""A grader as the reward of reinforcement training: the engine's `Reward` callable.

The engine knows nothing of graders (they sit above the providers: a model grader asks a
model), so the program that trains hands it this: `tunelab train --grader` and the workers
`tunelab worker` runs, for reinforcement jobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from tunelab.evals.graders.grade import grade
from tunelab.evals.graders.spec import parse_grader

if TYPE_CHECKING:  # the engine's module loads torch: a worker loads it when it trains
    from tunelab.engine.reinforcement import Reward


def reward_for(definition: Mapping) -> Reward:
    """The reward of each answer to an item: the grader's score of it (0 where grading it
    failed, as OpenAI's graders score an answer they cannot read)."""
    grader = parse_grader(dict(definition))

    def reward(answers: Sequence[str], item: Mapping) -> list[float]:
        return [grade(grader, answer, dict(item)).score for answer in answers]

    return reward
