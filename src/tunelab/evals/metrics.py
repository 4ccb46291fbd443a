"""Classification metrics with their uncertainty, and paired comparisons of two models.

An answer that is no valid label (None, or a string outside the label set) is *invalid*. It
counts as wrong for accuracy, and as a prediction of no class: it lowers the recall of the
gold class of its item and the precision of no class. The confusion matrix shows invalid
answers in an extra "(invalid)" column, so they are never folded into a real class.

Macro-F1 averages F1 over the labels that occur in the gold answers. A label that is never
the gold answer has no recall to speak of; predicting it wrongly still costs the recall of
the true class. Precision (or recall) with an empty denominator is 0, as in scikit-learn.

Evaluation sets are often small, so every rate comes with an interval: Wilson's score
interval for accuracy (it stays sensible at 0% and 100%, where a bootstrap collapses to a
point), a percentile bootstrap for anything else, and McNemar's exact test for two models
answering the same items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

INVALID = "(invalid)"


def classification_metrics(
    gold: list[str], predicted: list[str | None], labels: list[str] | None = None
) -> dict:
    """Accuracy (with a 95% interval), macro-F1, per-class scores and the confusion matrix.

    `labels` is the label set (by default the sorted gold labels); a gold label missing
    from it is added, so that every item has a row in the confusion matrix.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no items to score")
    known = list(labels) if labels is not None else []
    known += sorted(set(gold) - set(known))
    matrix = _confusion_matrix(gold, predicted, known)
    per_class = _per_class(matrix, known)
    gold_labels = set(gold)
    correct = [p == g for g, p in zip(gold, predicted, strict=True)]
    n_invalid = int(matrix[:, -1].sum())
    return {
        "n": len(gold),
        "accuracy": sum(correct) / len(gold),
        "accuracy_ci": wilson_interval(sum(correct), len(gold)),
        "macro_f1": float(np.mean([per_class[c]["f1"] for c in known if c in gold_labels])),
        "invalid_rate": n_invalid / len(gold),
        "n_invalid": n_invalid,
        "per_class": per_class,
        "confusion_matrix": {
            "labels": known,  # rows: gold labels
            "columns": [*known, INVALID],  # columns: predicted labels, then invalid answers
            "matrix": matrix.tolist(),
        },
    }


def _confusion_matrix(gold: list[str], predicted: list[str | None], known: list[str]):
    index = {label: i for i, label in enumerate(known)}
    matrix = np.zeros((len(known), len(known) + 1), dtype=int)
    for g, p in zip(gold, predicted, strict=True):
        matrix[index[g], index.get(p, len(known)) if p is not None else len(known)] += 1
    return matrix


def _per_class(matrix: np.ndarray, known: list[str]) -> dict[str, dict]:
    scores = {}
    for i, label in enumerate(known):
        hits = int(matrix[i, i])
        support = int(matrix[i].sum())
        predicted_as = int(matrix[:, i].sum())  # the invalid column is no class's prediction
        precision = hits / predicted_as if predicted_as else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return scores


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion `successes / n`."""
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    rate = successes / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n the exact bound is 0 or 1; rounding would leave 1e-17 off it.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def bootstrap_ci(
    values: Sequence | np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(values)`.

    Rows (the first axis) are resampled with replacement, so paired data goes in as one
    row per item, e.g. `np.column_stack([a, b])`, and stays paired.
    """
    data = np.asarray(values)
    if len(data) == 0:
        raise ValueError("no values to resample")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(data), size=(n_resamples, len(data)))
    stats = np.array([statistic(data[rows]) for rows in draws], dtype=float)
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return (float(low), float(high))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: binomial(a_only + b_only, 1/2) on the discordant pairs."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**n)  # exact integers: no underflow before the division


def paired_comparison(
    correct_a: list[bool], correct_b: list[bool], n_resamples: int = 1000, seed: int = 0
) -> dict:
    """Model B against model A on the same items: accuracy difference (B − A) and McNemar.

    `a_only`/`b_only` count the items only A (only B) got right; only these discordant
    items carry evidence of a difference, which is what McNemar's test uses.
    """
    if len(correct_a) != len(correct_b):
        raise ValueError(f"{len(correct_a)} answers from A but {len(correct_b)} from B")
    pairs = np.column_stack([correct_a, correct_b]).astype(float)
    a_only = int(np.sum((pairs[:, 0] == 1) & (pairs[:, 1] == 0)))
    b_only = int(np.sum((pairs[:, 0] == 0) & (pairs[:, 1] == 1)))
    return {
        "n": len(pairs),
        "accuracy_a": float(pairs[:, 0].mean()),
        "accuracy_b": float(pairs[:, 1].mean()),
        "difference": float(pairs[:, 1].mean() - pairs[:, 0].mean()),
        "difference_ci": bootstrap_ci(pairs, _difference, n_resamples, seed),
        "a_only": a_only,
        "b_only": b_only,
        "p_value": mcnemar_exact(a_only, b_only),
    }


def _difference(pairs: np.ndarray) -> float:
    return pairs[:, 1].mean() - pairs[:, 0].mean()
