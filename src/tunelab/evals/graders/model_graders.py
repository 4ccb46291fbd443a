"""`score_model` and `label_model`: a model grades, any model tunelab can name.

The model is asked through `tunelab.evals.candidates` (its provider answers: local weights,
a hosted service, an OpenAI-compatible URL). The grader's messages are rendered, and one
system message asks for OpenAI's answer shape, `{"result": ...}`; an answer that is not
JSON is read leniently (the first number; the one label it names), because small local
models seldom keep to a format. An answer that still cannot be read is a
`model_grader_parse_error`, a failed call a `model_grader_server_error`.
"""

from __future__ import annotations

import json
import re

from tunelab.errors import TunelabError
from tunelab.evals import candidates
from tunelab.evals.graders.result import GradeResult, GradingFailed
from tunelab.evals.graders.spec import LabelModel, ScoreModel
from tunelab.evals.graders.templates import Sample, render

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def grade_score_model(grader: ScoreModel, sample: Sample, item: dict) -> GradeResult:
    low, high = grader.range
    instruction = f'Reply with JSON only: {{"result": <a number from {low:g} to {high:g}>}}.'
    text, tokens = _ask(grader.model, grader.input, instruction, sample, item, grader.max_tokens)
    score = _read_score(text)
    if score is None or not low <= score <= high:
        raise GradingFailed("model_grader_parse_error", f"no score in range in {text!r}")
    threshold = grader.pass_threshold
    passed = None if threshold is None else score >= threshold
    return GradeResult(grader.name, grader.type, score, passed, tokens_by_model=tokens)


def grade_label_model(grader: LabelModel, sample: Sample, item: dict) -> GradeResult:
    instruction = 'Reply with JSON only: {"result": <one of ' + json.dumps(grader.labels) + ">}."
    text, tokens = _ask(grader.model, grader.input, instruction, sample, item, 64)
    label = read_label(text, grader.labels)
    if label is None:
        raise GradingFailed("model_grader_parse_error", f"no label of the set in {text!r}")
    passed = label in grader.passing_labels
    return GradeResult(grader.name, grader.type, float(passed), passed, tokens_by_model=tokens)


def _ask(model, messages, instruction, sample, item, max_tokens):
    """(answer text, {model: tokens}); raises GradingFailed where the model cannot answer."""
    chat = [
        {
            "role": "system" if m.role == "developer" else m.role,
            "content": render(m.content, sample, item),
        }
        for m in messages
    ]
    chat.append({"role": "system", "content": instruction})
    try:
        answer = _answer(model, chat, max_tokens)
    except TunelabError as err:
        raise GradingFailed("model_grader_server_error", err.message) from None
    if answer.error:
        raise GradingFailed("model_grader_server_error", answer.error)
    tokens = answer.usage.prompt_tokens + answer.usage.completion_tokens
    return answer.text, {model: tokens}


def _answer(model: str, chat: list[dict], max_tokens: int):
    candidate = candidates.open_candidate(model)
    try:
        [answer] = candidate.answer([chat], max_tokens=max_tokens)
    finally:
        candidate.close()
    return answer


def _read_score(text: str) -> float | None:
    result = _json_result(text)
    if isinstance(result, int | float) and not isinstance(result, bool):
        return float(result)
    found = _NUMBER.search(text if result is None else str(result))
    return float(found.group()) if found else None


def read_label(text: str, labels: tuple[str, ...]) -> str | None:
    """The label an answer gives: its JSON `result`, the whole answer, the one label equal to
    it ignoring case, else the one label it mentions; None when none (or several) fit."""
    result = _json_result(text)
    answer = (result if isinstance(result, str) else text).strip().strip("\"'.`")
    if answer in labels:
        return answer
    folded = [label for label in labels if label.casefold() == answer.casefold()]
    if len(folded) == 1:
        return folded[0]
    mentioned = [
        label for label in labels if re.search(rf"\b{re.escape(label)}\b", answer, re.IGNORECASE)
    ]
    return mentioned[0] if len(mentioned) == 1 else None


def _json_result(text: str):
    """`result` of the first JSON object in `text`, or None."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return value.get("result") if isinstance(value, dict) else None
