"""`GradeResult`: one grader's score of one sample, with OpenAI's error flags."""

from __future__ import annotations

from dataclasses import dataclass, field

# The flags of OpenAI's `metadata.errors`, each true when that failure gave the score 0.
ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


@dataclass(frozen=True)
class GradeResult:
    """`score` (0 where grading failed: `error` names the flag, `detail` says why),
    `sub_scores` of a multi grader's parts, and the model graders' token usage by model."""

    name: str
    type: str
    score: float
    passed: bool | None = None
    sub_scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    detail: str | None = None
    tokens_by_model: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def failed(cls, name: str, kind: str, error: str, detail: str | None) -> GradeResult:
        return cls(name, kind, 0.0, False, error=error, detail=detail)

    def error_flags(self) -> dict[str, bool]:
        return {flag: flag == self.error for flag in ERROR_FLAGS}


class GradingFailed(Exception):
    """Grading this sample failed: `flag` is one of ERROR_FLAGS, `detail` says why."""

    def __init__(self, flag: str, detail: str | None = None) -> None:
        super().__init__(detail or flag)
        self.flag, self.detail = flag, detail
