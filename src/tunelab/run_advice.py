"""Whether a finished run had more to learn, read from its recorded curve (`metrics.jsonl`
records, or a job's metrics): the answer to "how many steps does this task need?" that a
run can give about itself.

Read from answer accuracy (the share of examples whose whole answer the model predicts under
teacher forcing, `answer_accuracy` and `val_answer_accuracy`): token accuracy rises on a
task's easy template tokens long before answers come out right. Light (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# A rise of validation answer accuracy between the last two validations that counts as
# still improving (smaller moves are noise on a few hundred examples).
STILL_RISING = 0.02
# How far training answer accuracy may lead validation's before the gap is worth saying.
WIDE_GAP = 0.15


def _validations(records: Sequence[dict]) -> list[tuple[int, float]]:
    return [
        (record["step"], float(record["val_answer_accuracy"]))
        for record in records
        if isinstance(record.get("step"), int) and _number(record.get("val_answer_accuracy"))
    ]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def training_answer_accuracy(records: Sequence[dict], after_step: int) -> float | None:
    """The mean training answer accuracy of the steps after `after_step` (the steps since
    the previous validation), or None when none recorded it."""
    values = [
        float(record["answer_accuracy"])
        for record in records
        if isinstance(record.get("step"), int)
        and record["step"] > after_step
        and _number(record.get("answer_accuracy"))
    ]
    return sum(values) / len(values) if values else None


def more_training_advice(records: Sequence[dict]) -> str | None:
    """One line saying the run had more to learn, or None when its curve does not say so
    (or it recorded no validation answer accuracy: no validation file, or DPO and
    reinforcement runs)."""
    validations = _validations(records)
    if not validations:
        return None
    last = validations[-1][1]
    if len(validations) >= 2 and last - validations[-2][1] >= STILL_RISING:
        return (
            f"still improving at the last validation (answer accuracy {validations[-2][1]:.1%}"
            f" → {last:.1%}): more epochs may help (--n-epochs)"
        )
    previous_step = validations[-2][0] if len(validations) >= 2 else 0
    train = training_answer_accuracy(records, previous_step)
    if train is not None and train - last >= WIDE_GAP:
        return (
            f"validation answer accuracy {last:.1%} is far below training's {train:.1%}: "
            "the model fits its training examples better than new ones; more (or more "
            "varied) training data may help more than more epochs"
        )
    return None
