"""`grade(grader, sample, item)`: one grader's score of one model sample.

The one entry used by `tunelab eval grade`, the server's `/v1/fine_tuning/alpha/graders/run`
and reinforcement training's reward. A failure that concerns this sample only (a template
naming a missing field, an unreadable judge answer, a python grader that raised or ran out
of time) is a score of 0 with OpenAI's error flag set; a grader that cannot work at all
(`cosine` without an embedding model) raises TunelabError.
"""

from __future__ import annotations

import time

from tunelab.errors import TunelabError
from tunelab.evals.graders import similarity
from tunelab.evals.graders.model_graders import grade_label_model, grade_score_model
from tunelab.evals.graders.python_grader import run_python_grader
from tunelab.evals.graders.result import GradeResult, GradingFailed
from tunelab.evals.graders.spec import (
    Grader,
    LabelMatch,
    LabelModel,
    MongoQuery,
    Multi,
    Python,
    ScoreModel,
    StringCheck,
    TextSimilarity,
)
from tunelab.evals.graders.templates import MissingVariable, Sample, render
from tunelab.evals.mongo.normalize import exact_match
from tunelab.evals.mongo.parser import parse_query
from tunelab.evals.mongo.structure import structural_match
from tunelab.evals.mongo.syntax import QueryParseError

_PYTHON_ERRORS = {"runtime": "python_grader_runtime_error", "memory": "python_grader_runtime_error"}


def grade(grader: Grader, sample: Sample | str, item: dict | None = None) -> GradeResult:
    """`grader`'s score of `sample` (a model's output, or its text) for dataset row `item`."""
    sample = Sample.from_text(sample) if isinstance(sample, str) else sample
    item = item if item is not None else {}
    began = time.perf_counter()
    try:
        result = _GRADE[type(grader)](grader, sample, item)
    except MissingVariable as err:
        result = GradeResult.failed(grader.name, grader.type, "invalid_variable_error", str(err))
    except GradingFailed as err:
        result = GradeResult.failed(grader.name, grader.type, err.flag, err.detail)
    return _timed(result, time.perf_counter() - began)


def _timed(result: GradeResult, seconds: float) -> GradeResult:
    return GradeResult(**{**result.__dict__, "seconds": seconds})


def _string_check(grader: StringCheck, sample: Sample, item: dict) -> GradeResult:
    text, reference = render(grader.input, sample, item), render(grader.reference, sample, item)
    holds = {
        "eq": text == reference,
        "ne": text != reference,
        "like": reference in text,
        "ilike": reference.casefold() in text.casefold(),
    }[grader.operation]
    return GradeResult(grader.name, grader.type, float(holds), holds)


def _text_similarity(grader: TextSimilarity, sample: Sample, item: dict) -> GradeResult:
    text, reference = render(grader.input, sample, item), render(grader.reference, sample, item)
    score = similarity_score(grader.evaluation_metric, text, reference)
    threshold = grader.pass_threshold
    return GradeResult(
        grader.name, grader.type, score, None if threshold is None else score >= threshold
    )


def similarity_score(metric: str, text: str, reference: str) -> float:
    """`text_similarity`'s score by `metric` (see `similarity`)."""
    if metric == "cosine":
        raise TunelabError(
            "embeddings_unavailable",
            "the cosine metric needs an embedding model, and no provider offers one.",
            hint="use fuzzy_match, bleu, gleu, meteor or a rouge metric",
        )
    if metric in similarity.ROUGE_ORDERS:
        return similarity.rouge_n(text, reference, similarity.ROUGE_ORDERS[metric])
    metrics = {
        "fuzzy_match": similarity.fuzzy_match,
        "bleu": similarity.bleu,
        "gleu": similarity.gleu,
        "meteor": similarity.meteor,
        "rouge_l": similarity.rouge_l,
    }
    return metrics[metric](text, reference)


def _python(grader: Python, sample: Sample, item: dict) -> GradeResult:
    outcome = run_python_grader(grader.source, sample.namespace(), item)
    if outcome.error is None:
        return GradeResult(grader.name, grader.type, outcome.score)
    if outcome.error == "timeout":
        raise GradingFailed("unresponsive_reward_error", outcome.detail)
    raise GradingFailed(
        _PYTHON_ERRORS.get(outcome.error, "python_grader_server_error"), outcome.detail
    )


def _multi(grader: Multi, sample: Sample, item: dict) -> GradeResult:
    parts = {name: grade(sub, sample, item) for name, sub in grader.graders.items()}
    scores = {name: part.score for name, part in parts.items()}
    tokens: dict[str, int] = {}
    for part in parts.values():
        for model, count in part.tokens_by_model.items():
            tokens[model] = tokens.get(model, 0) + count
    try:
        score = grader.calculate_output.evaluate(scores)
    except (ArithmeticError, ValueError) as err:
        raise GradingFailed("other_error", f"calculate_output: {err}") from None
    failed = next((part for part in parts.values() if part.error), None)
    return GradeResult(
        grader.name,
        grader.type,
        score,
        sub_scores=scores,
        error=failed.error if failed else None,
        detail=f"{failed.name}: {failed.detail}" if failed else None,
        tokens_by_model=tokens,
    )


def _mongo_query(grader: MongoQuery, sample: Sample, item: dict) -> GradeResult:
    try:
        gold = parse_query(render(grader.reference, sample, item))
    except QueryParseError as err:
        raise GradingFailed("other_error", f"the reference query does not parse: {err}") from None
    try:
        predicted = parse_query(render(grader.input, sample, item))
    except QueryParseError as err:
        return GradeResult(grader.name, grader.type, 0.0, False, detail=f"no query: {err}")
    if grader.metric == "parse":
        score = 1.0
    elif grader.metric == "exact":
        score = float(exact_match(gold, predicted))
    else:
        score = structural_match(gold, predicted)["score"]
    return GradeResult(grader.name, grader.type, score, score == 1.0)


def _label_match(grader: LabelMatch, sample: Sample, item: dict) -> GradeResult:
    """The answer, stripped, is the reference label (or equals it ignoring case where that
    picks one label of `labels`): "I think X" is no answer, as in `tunelab eval classify`."""
    answer = render(grader.input, sample, item).strip()
    reference = render(grader.reference, sample, item).strip()
    known = grader.labels or (reference,)
    if answer not in known:
        folded = [label for label in known if label.casefold() == answer.casefold()]
        answer = folded[0] if len(folded) == 1 else answer
    holds = answer == reference
    return GradeResult(grader.name, grader.type, float(holds), holds)


_GRADE = {
    StringCheck: _string_check,
    TextSimilarity: _text_similarity,
    ScoreModel: grade_score_model,
    LabelModel: grade_label_model,
    Python: _python,
    Multi: _multi,
    MongoQuery: _mongo_query,
    LabelMatch: _label_match,
}
