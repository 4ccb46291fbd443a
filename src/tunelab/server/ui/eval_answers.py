"""An evaluation's answers as the studio pages through them: a page at a time, optionally
only the items some model got wrong, and each data file named as it was uploaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.evals.report import ANSWER_MARKS
from tunelab.registry import Store

ANSWERS_PER_PAGE = 20


@dataclass(frozen=True)
class AnswerRow:
    """One item: its question, the gold answer, and each model's answer with its mark
    (True right, False wrong, None unmarked, e.g. a judge's)."""

    number: int
    question: str
    gold: str
    answers: list[tuple[str, str, bool | None]]

    @property
    def wrong(self) -> bool:
        return any(mark is False for _, _, mark in self.answers)


@dataclass(frozen=True)
class AnswerPage:
    rows: list[AnswerRow]
    models: list[str]
    page: int
    n_pages: int
    n_items: int
    n_wrong: int
    wrong_only: bool


def answer_rows(result: dict) -> list[AnswerRow]:
    """Every item of a run's result.json, in order (a pairwise run has none of its own)."""
    outputs = result.get("outputs") or {}
    is_right = ANSWER_MARKS.get(result.get("kind"))
    if not outputs or is_right is None:
        return []
    names = list(outputs)
    rows = []
    for index, first in enumerate(outputs[names[0]]):
        answers = [  # a partial run: a model stopped early has no answer to the later items
            (name, *_answer(outputs[name][index], is_right))
            if index < len(outputs[name])
            else (name, "—", None)
            for name in names
        ]
        question, gold = str(first.get("question", "")), str(first.get("gold", ""))
        rows.append(AnswerRow(index + 1, question, gold, answers))
    return rows


def _answer(output: dict, is_right) -> tuple[str, bool | None]:
    right = is_right(output)
    return str(output.get("answer", "")), None if right is None else bool(right)


def answer_page(result: dict, page: int = 1, *, wrong_only: bool = False) -> AnswerPage:
    """Page `page` (from 1; clamped to the pages there are) of the run's answers."""
    rows = answer_rows(result)
    wrong = [r for r in rows if r.wrong]
    shown = wrong if wrong_only else rows
    n_pages = max(1, -(-len(shown) // ANSWERS_PER_PAGE))
    page = min(max(1, page), n_pages)
    start = (page - 1) * ANSWERS_PER_PAGE
    models = list((result.get("outputs") or {}).keys())
    return AnswerPage(
        shown[start : start + ANSWERS_PER_PAGE],
        models,
        page,
        n_pages,
        len(rows),
        len(wrong),
        wrong_only,
    )


def file_names() -> dict[str, str]:
    """Each registry file's path → the name it was uploaded with."""
    with Store() as store:
        return {f.path: f.filename for f in store.list_files(limit=10_000) if f.path}


def data_name(data: dict | None, names: dict[str, str]) -> str:
    """A run's data file as people know it: its uploaded name, else the file's own name."""
    path = (data or {}).get("path") or ""
    return names.get(path) or Path(path).name or "—"


def error_text(run, names: dict[str, str]) -> str | None:
    """A failed run's error, its data file named as people know it (the message of a file
    that could not be read names its place on the server)."""
    if not run.error_message:
        return None
    path = (run.data or {}).get("path")
    if not path:
        return run.error_message
    return run.error_message.replace(path, data_name(run.data, names))
