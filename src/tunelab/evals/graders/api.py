"""The graders API as OpenAI's `fine_tuning.alpha.graders` answers it: `run_grader` and
`validate_grader` take and return the JSON its `run` and `validate` calls send and expect."""

from __future__ import annotations

from tunelab.evals.graders.grade import grade
from tunelab.evals.graders.spec import parse_grader
from tunelab.evals.graders.templates import Sample


def validate_grader(spec: dict) -> dict:
    """`{"grader": spec}` when `spec` is a valid grader; raises TunelabError `grader_invalid`."""
    parse_grader(spec)
    return {"grader": spec}


def run_grader(spec: dict, model_sample: str, item: dict | None = None) -> dict:
    """The grader's reward for one sample, with OpenAI's metadata (errors, scores, timing)."""
    result = grade(parse_grader(spec), Sample.from_text(model_sample), item or {})
    return {
        "reward": result.score,
        "sub_rewards": dict(result.sub_scores),
        "model_grader_token_usage_per_model": dict(result.tokens_by_model),
        "metadata": {
            "name": result.name,
            "type": result.type,
            "errors": {
                **result.error_flags(),
                "model_grader_server_error_details": _detail(result, "model_grader_server_error"),
                "python_grader_runtime_error_details": _detail(
                    result, "python_grader_runtime_error"
                ),
                "python_grader_server_error_type": _detail(result, "python_grader_server_error"),
            },
            "execution_time": result.seconds,
            "scores": {result.name: result.score, **result.sub_scores},
            "token_usage": sum(result.tokens_by_model.values()) or None,
            "sampled_model_name": None,
        },
    }


def _detail(result, flag: str) -> str | None:
    return result.detail if result.error == flag else None
