"""`tunelab eval classify`: accuracy, macro-F1 and the confusion matrix, models side by side.

The prompt is the one `tunelab format` trains on (`ClassificationPrompt`). By default each
label is scored by its log-likelihood after the prompt and the best one is the model's
answer (`method="score"`: no invalid answers, and base models get a fair measure); with
`method="generate"` the model generates and answers are read with `parse_answer`: an answer
that is no valid label counts as wrong and is reported as invalid, never guessed. Every model
after the first is compared with the first on the same items (difference in accuracy with a
bootstrap interval, McNemar's exact test).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunelab.data.prompts import ClassificationPrompt, read_label_set
from tunelab.errors import TunelabError, usage_error
from tunelab.evals import candidates
from tunelab.evals.candidates import Interrupted, answer_all, score_all
from tunelab.evals.items import EvalData
from tunelab.evals.metrics import classification_metrics, paired_comparison
from tunelab.evals.result import TaskResult, partial_of
from tunelab.types import best_answer

MAX_TOKENS = 32  # a label, its tags and a little slack; longer answers are invalid anyway


def gold_labels(
    data: EvalData, prompt: ClassificationPrompt, labels: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """The gold label of every item, and the label set.

    Classification tables carry labels; chat JSONL files (e.g. a validation file from
    `tunelab format`) carry answers like `<category>HUM</category>`, read back here. The
    label set is `labels` when given, else the table's, else the one `tunelab format` kept
    beside the file (`--template short`: the prompts do not list it), else the gold answers'.
    """
    golds = [item.label for item in data.items] if data.labels else _answered(data, prompt)
    known = labels or data.labels or read_label_set(data.path) or sorted(set(golds))
    if len(set(known)) < 2:
        raise TunelabError(
            "not_classification",
            f"{data.path} has {len(known)} distinct answer(s); classification needs at least 2.",
            hint="pass a classification table or a chat JSONL file made from one",
            path=data.path,
        )
    unknown = sorted(set(golds) - set(known))
    if unknown:
        raise TunelabError(
            "label_not_in_set",
            f"{len(unknown)} gold answer(s) of {data.path} are not in the label set: "
            + ", ".join(unknown[:5]),
            hint="pass every label with --labels, or format the data again",
            path=data.path,
        )
    return golds, list(known)


def _answered(data: EvalData, prompt: ClassificationPrompt) -> list[str]:
    """Each item's gold label, read from its gold answer (tag removed when present)."""
    tag = re.escape(prompt.output_tag)
    golds = []
    for item in data.items:
        found = re.fullmatch(rf"\s*<{tag}>(.*)</{tag}>\s*", item.gold, re.DOTALL)
        golds.append((found.group(1) if found else item.gold).strip())
    return golds


@dataclass(frozen=True, kw_only=True)
class ClassificationResult(TaskResult):
    """What `evaluate_classification` returns; `answers` holds one row per item scored."""

    labels: list[str]  # the label set
    method: str  # "score" or "generate"
    models: dict[str, dict]  # per model: accuracy, macro-F1, confusion matrix, ...
    comparisons: list[dict]  # each later model against the first, on the same items


METHODS = ("score", "generate")
NO_LOGPROBS = (
    "label scoring needs the model's log-likelihoods, which its provider does not give: "
    "answered by generation instead"
)


def evaluate_classification(
    data: EvalData,
    models: list[str],
    *,
    prompt: ClassificationPrompt | None = None,
    labels: list[str] | None = None,
    method: str = "score",
    normalize: str = "sum",
    progress=None,
    cancel=None,
) -> ClassificationResult:
    """Metrics per model (and comparisons with the first), and every scored answer.

    `method="score"` picks, for each item, the label whose answer (as `tunelab format`
    trains it: `<category>LABEL</category>` and the end of the turn) has the highest
    log-likelihood after the prompt (`normalize`: "sum" or "mean" per token, see
    `tunelab.engine.score`): no answer is invalid. Models without log-likelihoods (hosted)
    fall back to generation, and their metrics say so. `method="generate"` reads the greedy
    answer of each item with `parse_answer`, as the seeds did. `labels` replaces the label
    set found in the data (see `gold_labels`).
    """
    if method not in METHODS:
        raise usage_error("invalid_method", f"method must be one of {', '.join(METHODS)}")
    prompt = prompt or ClassificationPrompt()
    golds, labels = gold_labels(data, prompt, labels)
    results, outputs, correct = {}, {}, {}
    for name in models:
        rows, figures = _classify_with(
            name, data, prompt, labels, method, normalize, progress, cancel
        )
        n = len(rows)  # fewer than the items when the run was cancelled part-way
        if not n:
            break
        predicted = [row["predicted"] for row in rows]
        metrics = classification_metrics(golds[:n], predicted, labels)
        metrics.update(figures)
        results[name] = metrics
        correct[name] = [p == g for p, g in zip(predicted, golds, strict=False)]
        outputs[name] = [
            {
                "question": item.question,
                "gold": gold,
                **row,
                "correct": row["predicted"] == gold,
                "source_line": item.source_line,
            }
            for item, gold, row in zip(data.items, golds, rows, strict=False)
        ]
        if n < len(golds):
            break
    return ClassificationResult(
        labels=labels,
        method=method,
        models=results,
        comparisons=_comparisons(models[0], correct),
        answers=outputs,
        partial=partial_of(outputs, models, len(golds)),
    )


def _comparisons(baseline: str, correct: dict[str, list[bool]]) -> list[dict]:
    """Each later model against the baseline, on the items both answered."""
    found = []
    for name, marks in list(correct.items())[1:]:
        n = min(len(marks), len(correct[baseline]))
        if n:
            found.append(
                {
                    "baseline": baseline,
                    "model": name,
                    **paired_comparison(correct[baseline][:n], marks[:n]),
                }
            )
    return found


def _classify_with(name, data, prompt, labels, method, normalize, progress, cancel):
    """(one row per item: answer, predicted label, error), and the model's figures."""
    conversations = data.conversations()
    note = None
    if method == "score":
        answers = [prompt.answer(label) for label in labels]
        try:
            scores, seconds = score_all(
                name, conversations, answers, progress=progress, cancel=cancel
            )
        except Interrupted as stop:  # keep the items scored before the cancel
            scores, seconds = stop.done, stop.seconds
        if scores is not None:
            rows = [_scored_row(item_scores, labels, answers, normalize) for item_scores in scores]
            return rows, _figures("score", len(rows), seconds, normalize=normalize)
        note = NO_LOGPROBS
    try:
        answers, seconds = answer_all(
            name, conversations, max_tokens=MAX_TOKENS, progress=progress, cancel=cancel
        )
    except Interrupted as stop:
        answers, seconds = stop.done, stop.seconds
    rows = [
        {
            "answer": a.text,
            "error": a.error,
            "predicted": prompt.parse_answer(a.text, labels) if not a.error else None,
        }
        for a in answers
    ]
    figures = _figures("generate", len(rows), seconds, note=note)
    figures["n_errors"] = sum(1 for a in answers if a.error)
    return rows, figures


def _scored_row(scores, labels: list[str], answers: list[str], normalize: str) -> dict:

    best = best_answer(scores, normalize)
    values = {
        label: round(score.value(normalize), 4) for label, score in zip(labels, scores, strict=True)
    }
    return {
        "answer": answers[best],
        "error": None,
        "predicted": labels[best],
        "label_scores": values,
    }


def label_picker(
    name: str, labels: list[str], prompt: ClassificationPrompt | None = None, normalize: str = "sum"
):
    """A function answering a chat with model `name`'s most likely label: `tunelab chat
    --labels`. It returns the row `eval classify` records for an item (`answer`, as the
    model was trained to answer, `predicted`, `label_scores`). Needs the model's
    log-likelihoods, so its weights must be on this machine."""

    prompt = prompt or ClassificationPrompt()
    candidate = candidates.open_candidate(name)
    if not candidate.gives_logprobs:
        raise usage_error(
            "no_logprobs",
            f"{name} gives no log-likelihoods, so its labels cannot be scored.",
            hint="drop --labels, or use a model whose weights are on this machine",
        )
    answers = [prompt.answer(label) for label in labels]

    def pick(messages: list[dict]) -> dict:
        [scores] = candidate.score([messages], answers)
        return _scored_row(scores, labels, answers, normalize)

    return pick


def _figures(method: str, n: int, seconds: float, **extra) -> dict:
    figures = {
        "method": method,
        "seconds": round(seconds, 2),
        "answers_per_second": round(n / seconds, 2) if seconds else None,
        "n_errors": 0,
    }
    figures.update({k: v for k, v in extra.items() if v is not None})
    return figures
