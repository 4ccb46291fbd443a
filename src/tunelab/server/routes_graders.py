"""`/v1/fine_tuning/alpha/graders/run` and `/validate`, as OpenAI's SDK calls them.

Thin over `tunelab.evals.graders.api`. The routes are plain functions, run on the server's
thread pool: a model grader's answer or a python grader's process (always a separate one,
with its own limits) never holds the event loop, so the server keeps answering meanwhile.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from tunelab.evals.graders.api import run_grader, validate_grader

router = APIRouter()


class RunGrader(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is refused by name
    grader: dict
    model_sample: str
    item: dict | None = None


class ValidateGrader(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unknown field is refused by name
    grader: dict


@router.post("/fine_tuning/alpha/graders/run")
def run(body: RunGrader) -> dict:
    return run_grader(body.grader, body.model_sample, body.item)


@router.post("/fine_tuning/alpha/graders/validate")
def validate(body: ValidateGrader) -> dict:
    return validate_grader(body.grader)
