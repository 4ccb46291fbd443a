from __future__ import annotations

import numpy as np
import pytest

from tunelab.evals.metrics import (
    INVALID,
    bootstrap_ci,
    classification_metrics,
    mcnemar_exact,
    paired_comparison,
    wilson_interval,
)

LABELS = ["cat", "dog", "fox"]
GOLD = ["cat", "cat", "cat", "dog", "dog", "fox"]
PREDICTED = ["cat", "cat", "dog", "dog", None, "cat"]


def test_small_case_with_an_invalid_answer_matches_hand_computation():
    m = classification_metrics(GOLD, PREDICTED, LABELS)
    # Right on items 1, 2 and 4 of 6; the invalid answer (item 5) counts as wrong.
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["invalid_rate"] == pytest.approx(1 / 6)
    assert m["n_invalid"] == 1
    # Rows gold, columns predicted cat, dog, fox, (invalid).
    assert m["confusion_matrix"] == {
        "labels": LABELS,
        "columns": [*LABELS, INVALID],
        "matrix": [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]],
    }
    cat, dog, fox = (m["per_class"][label] for label in LABELS)
    # cat: predicted 3 times (2 + 0 + 1), right twice; 3 gold → P = R = F1 = 2/3.
    assert (cat["precision"], cat["recall"], cat["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    # dog: predicted twice (a cat item and a dog item), right once → P = 1/2. The invalid
    # answer on the second dog item lowers recall (1 of 2) but no class's precision.
    assert (dog["precision"], dog["recall"], dog["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    # fox: never predicted → P = 0 (empty denominator), R = 0/1, F1 = 0.
    assert (fox["precision"], fox["recall"], fox["f1"]) == (0.0, 0.0, 0.0)
    assert [c["support"] for c in (cat, dog, fox)] == [3, 2, 1]
    # macro-F1 = (2/3 + 1/2 + 0) / 3 = 7/18.
    assert m["macro_f1"] == pytest.approx(7 / 18)


def test_a_label_outside_the_label_set_is_an_invalid_answer_not_a_new_class():
    m = classification_metrics(["cat", "dog"], ["wolf", "dog"], ["cat", "dog"])
    assert m["accuracy"] == 0.5
    assert m["invalid_rate"] == 0.5
    assert m["confusion_matrix"]["matrix"] == [[0, 0, 1], [0, 1, 0]]
    assert "wolf" not in m["per_class"]


def test_macro_f1_averages_over_gold_labels_only():
    # "eel" is a known label but never the gold answer: it is reported, not averaged.
    m = classification_metrics(["cat", "dog"], ["cat", "eel"], ["cat", "dog", "eel"])
    assert m["per_class"]["eel"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # (F1 cat = 1 + F1 dog = 0) / 2 gold labels.
    assert m["macro_f1"] == pytest.approx(0.5)


def test_labels_default_to_the_gold_labels_and_missing_gold_labels_are_added():
    assert classification_metrics(["b", "a"], ["a", "a"])["confusion_matrix"]["labels"] == [
        "a",
        "b",
    ]
    added = classification_metrics(["a", "z"], ["a", "z"], ["a"])
    assert added["confusion_matrix"]["labels"] == ["a", "z"]
    assert added["accuracy"] == 1.0


def test_perfect_predictions():
    gold = ["a", "b", "a", "c"] * 5
    m = classification_metrics(gold, list(gold))
    assert (m["accuracy"], m["macro_f1"], m["invalid_rate"]) == (1.0, 1.0, 0.0)
    low, high = m["accuracy_ci"]
    assert high == 1.0 and 0.8 < low < 1.0  # Wilson: not the degenerate [1, 1]


def test_all_invalid_answers_score_zero():
    m = classification_metrics(["a", "b", "a"], [None, None, "nonsense"])
    assert (m["accuracy"], m["macro_f1"], m["invalid_rate"]) == (0.0, 0.0, 1.0)
    assert m["confusion_matrix"]["matrix"] == [[0, 0, 2], [0, 0, 1]]
    assert m["accuracy_ci"][0] == 0.0 and m["accuracy_ci"][1] > 0.3


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(ValueError):
        classification_metrics(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        classification_metrics([], [])


def test_wilson_interval_known_values():
    # 0 of 10: centre = (z²/20) / (1 + z²/10), half-width the same → (0, 0.2775).
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    # 5 of 10: centre 0.5, half-width z·√(0.025 + z²/400) / (1 + z²/10) = 0.2634.
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(50, 100, level=0.99)[0] < wilson_interval(50, 100)[0]


def test_bootstrap_ci_is_reproducible_and_brackets_the_statistic():
    values = np.random.default_rng(3).normal(5.0, 1.0, 200)
    low, high = bootstrap_ci(values, np.mean, seed=1)
    assert (low, high) == bootstrap_ci(values, np.mean, seed=1)
    assert low < values.mean() < high
    assert 0.2 < high - low < 0.4  # about 2 × 1.96 × 1/√200 = 0.28
    wide = bootstrap_ci(values, np.mean, seed=1, level=0.99)
    assert wide[0] < low and wide[1] > high
    assert bootstrap_ci([2.0] * 10, np.mean) == (2.0, 2.0)


def test_bootstrap_keeps_rows_paired():
    same = np.column_stack([[1, 0, 1, 1, 0], [1, 0, 1, 1, 0]])
    assert bootstrap_ci(same, lambda rows: rows[:, 1].mean() - rows[:, 0].mean()) == (0.0, 0.0)


def test_mcnemar_exact_hand_computed():
    # 1 vs 6 discordant: 2 × (C(7,0) + C(7,1)) / 2⁷ = 2 × 8 / 128 = 0.125.
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)
    # 0 vs 5: 2 × 1 / 32.
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0  # the doubled tail exceeds 1 and is capped


def test_mcnemar_exact_stays_exact_for_many_discordant_pairs():
    p = mcnemar_exact(400, 600)
    assert 0 < p < 1e-9


def test_paired_comparison_hand_computed():
    # 10 items: both right ×2, only A right ×1, only B right ×6, both wrong ×1.
    a = [True, True, True] + [False] * 6 + [False]
    b = [True, True, False] + [True] * 6 + [False]
    c = paired_comparison(a, b)
    assert c["n"] == 10
    assert (c["accuracy_a"], c["accuracy_b"]) == pytest.approx((0.3, 0.8))
    assert c["difference"] == pytest.approx(0.5)
    assert (c["a_only"], c["b_only"]) == (1, 6)
    assert c["p_value"] == pytest.approx(0.125)
    low, high = c["difference_ci"]
    assert -1 <= low < 0.5 < high <= 1
    assert paired_comparison(a, b)["difference_ci"] == c["difference_ci"]


def test_paired_comparison_of_identical_models_shows_no_difference():
    answers = [True, False, True, True]
    c = paired_comparison(answers, answers)
    assert c["difference"] == 0.0 and c["difference_ci"] == (0.0, 0.0) and c["p_value"] == 1.0
