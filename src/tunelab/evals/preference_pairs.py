"""Preference pairs from an evaluation run's mistakes: `tunelab format --to preference
--from-eval RUN_ID`.

A `classify` or `queries` run records, per item and model, the question, the answer and
whether it was right. Each item a model got wrong becomes a pair (`data.preference.
correction_pairs`): the item's prompt, re-read from the run's data file, with its gold
answer preferred and the model's answer not. The file must be the one evaluated (same
sha256), and each item's question the one recorded, so that no pair puts an answer under
another prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.data.preference import PreferenceExample, correction_pairs
from tunelab.errors import TunelabError, usage_error
from tunelab.evals import runs
from tunelab.evals.items import EvalData, load_items
from tunelab.io import atomic_write_text, check_output_path, file_sha256
from tunelab.registry import EvalRun

# Whether a recorded answer was right, by kind of run (as the runs' reports mark them).
RIGHT = {
    "classify": lambda row: bool(row.get("correct")),
    "queries": lambda row: bool(row.get("exact") or row.get("execution")),
}


@dataclass(frozen=True)
class RunPairs:
    """The pairs of one run, and what they came from."""

    run_id: str
    pairs: list[PreferenceExample]
    n_answers: int  # the answers recorded, every model's
    n_wrong: int  # of which wrong (failed calls left out)
    n_left_out: int  # wrong answers that make no pair (empty, or the gold itself)


def pairs_from_run(run_id: str) -> RunPairs:
    """The preference pairs of run `run_id`'s wrong answers, every model's."""
    run = runs.get_run(run_id)
    _check_run(run)
    outputs = runs.run_outputs(run_id)
    data = _evaluated_data(run, 1 + max((row.item for row in outputs), default=0))
    answered, n_wrong = [], 0
    for row in outputs:
        item = _matching_item(data, row.item, row.output, run)
        if row.output.get("error") or RIGHT[run.kind](row.output):
            continue
        n_wrong += 1
        wrong = row.output.get("answer") or ""
        answered.append((item.messages, item.gold, wrong, item.source_line))
    pairs, left_out = correction_pairs(answered)
    if not pairs:
        raise TunelabError(
            "no_pairs",
            f"{run_id} has no wrong answer to pair ({n_wrong} wrong of {len(outputs)}, "
            f"{left_out} empty or the gold answer itself).",
        )
    return RunPairs(run_id, pairs, len(outputs), n_wrong, left_out)


def _check_run(run: EvalRun) -> None:
    if run.kind not in RIGHT:
        raise usage_error(
            "no_gold_answers",
            f"{run.id} is a {run.kind} run: its answers are not marked right or wrong.",
            hint="pairs come from `eval classify` and `eval queries` runs",
        )
    if run.status not in ("succeeded", "partial"):
        raise TunelabError(
            "eval_run_unfinished", f"{run.id} is {run.status}: it has no answers to pair."
        )


def _evaluated_data(run: EvalRun, n_items: int) -> EvalData:
    """The run's data file, re-read as the run read it, if it is still the same file."""
    path = Path(run.data.get("path", ""))
    if not path.is_file():
        raise TunelabError(
            "file_not_found",
            f"{path}, the data {run.id} evaluated, does not exist.",
            hint="the pairs' prompts are read from it: restore the file",
            path=path,
        )
    if file_sha256(path) != run.data.get("sha256"):
        raise TunelabError(
            "eval_data_changed",
            f"{path} has changed since {run.id} evaluated it (its sha256 differs).",
            hint="restore the file the run evaluated, or evaluate again",
            path=path,
        )
    return load_items(path, run.data.get("kind"), limit=n_items)


def _matching_item(data: EvalData, index: int, output: dict, run: EvalRun):
    """Item `index`, whose question must be the one the run recorded."""
    if index >= len(data.items) or data.items[index].question != output.get("question"):
        raise TunelabError(
            "eval_data_mismatch",
            f"item {index + 1} of {data.path} is not the question {run.id} recorded.",
            hint="the run read the file with other source flags; such runs cannot be paired",
            path=data.path,
        )
    return data.items[index]


def write_pairs(path: Path, pairs: list[PreferenceExample], *, force: bool = False) -> None:
    """The pairs as preference JSONL, written atomically; an existing file only with
    `force`."""
    check_output_path(path, force=force)
    atomic_write_text(path, b"".join(pair.to_json_line() for pair in pairs).decode())
