"""`tunelab eval classify`: accuracy, macro-F1 and the confusion matrix, models side by side.

The prompt is the one `tunelab format` trains on (`ClassificationPrompt`), and answers are
read with its `parse_answer`: an answer that is no valid label counts as wrong and is
reported as invalid, never guessed. Every model after the first is compared with the first
on the same items (difference in accuracy with a bootstrap interval, McNemar's exact test).
"""

from __future__ import annotations

import re

from tunelab.data.prompts import ClassificationPrompt
from tunelab.errors import TunelabError
from tunelab.evals.candidates import answer_all
from tunelab.evals.items import EvalData
from tunelab.evals.metrics import classification_metrics, paired_comparison

MAX_TOKENS = 32  # a label, its tags and a little slack; longer answers are invalid anyway


def gold_labels(data: EvalData, prompt: ClassificationPrompt) -> tuple[list[str], list[str]]:
    """The gold label of every item, and the label set.

    Classification tables carry labels; chat JSONL files (e.g. a validation file from
    `tunelab format`) carry answers like `<category>HUM</category>`, read back here.
    """
    if data.labels:
        return [item.label for item in data.items], data.labels
    tag = re.escape(prompt.output_tag)
    golds = []
    for item in data.items:
        found = re.fullmatch(rf"\s*<{tag}>(.*)</{tag}>\s*", item.gold, re.DOTALL)
        golds.append((found.group(1) if found else item.gold).strip())
    labels = sorted(set(golds))
    if len(labels) < 2:
        raise TunelabError(
            "not_classification",
            f"{data.path} has {len(labels)} distinct answer(s); classification needs at least 2.",
            hint="pass a classification table or a chat JSONL file made from one",
            path=data.path,
        )
    return golds, labels


def evaluate_classification(
    data: EvalData,
    models: list[str],
    *,
    prompt: ClassificationPrompt | None = None,
    progress=None,
    cancel=None,
) -> tuple[dict, dict[str, list[dict]]]:
    """Metrics per model (and comparisons with the first), and every scored answer."""
    prompt = prompt or ClassificationPrompt()
    golds, labels = gold_labels(data, prompt)
    results, outputs, correct = {}, {}, {}
    for name in models:
        answers, seconds = answer_all(
            name,
            [i.messages for i in data.items],
            max_tokens=MAX_TOKENS,
            progress=progress,
            cancel=cancel,
        )
        predicted = [prompt.parse_answer(a.text, labels) if not a.error else None
                     for a in answers]  # fmt: skip
        metrics = classification_metrics(golds, predicted, labels)
        metrics.update(seconds=round(seconds, 2),
                       answers_per_second=round(len(answers) / seconds, 2) if seconds else None,
                       n_errors=sum(1 for a in answers if a.error))  # fmt: skip
        results[name] = metrics
        correct[name] = [p == g for p, g in zip(predicted, golds, strict=True)]
        outputs[name] = [
            {"question": item.question, "gold": gold, "answer": answer.text,
             "predicted": guess, "correct": guess == gold, "error": answer.error,
             "source_line": item.source_line}
            for item, gold, answer, guess in zip(data.items, golds, answers, predicted,
                                                  strict=True)
        ]  # fmt: skip
    comparisons = [
        {"baseline": models[0], "model": name, **paired_comparison(correct[models[0]],
                                                                    correct[name])}
        for name in models[1:]
    ]  # fmt: skip
    return {"labels": labels, "models": results, "comparisons": comparisons}, outputs
