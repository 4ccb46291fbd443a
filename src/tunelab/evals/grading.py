"""`tunelab eval grade`: one grader's scores of a model's answers to reinforcement items, or
of samples recorded in a file.

Each item (a reinforcement line: messages ending with a user turn, and the fields a grader
reads as `{{item.NAME}}`) gets one sample: the model's greedy answer, asked through its
provider as every evaluation asks (`candidates.answer_all`), or the matching line of a
samples file (`{"output_text": ...}` or `{"output_json": ...}`). `evaluate_grader` grades
each with `graders.grade` and returns the mean score, the pass rate where the grader says
what passes, each sub-grader's mean for `multi`, and the failures counted by kind; a cancel
keeps the items graded so far. `record_run` records it like any evaluation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import orjson

from tunelab.data.jsonl import iter_bounded_lines, open_jsonl
from tunelab.data.methods import parse_line
from tunelab.data.reinforcement import (
    ReinforcementItem,
    grader_item_fields,
    read_reinforcement_file,
)
from tunelab.data.validate import MAX_LINE_BYTES
from tunelab.errors import TunelabError
from tunelab.evals.candidates import Interrupted, answer_all
from tunelab.evals.graders import Grader, GradeResult, Sample, grade, parse_grader
from tunelab.evals.items import describe_data
from tunelab.evals.result import TaskResult, partial_of
from tunelab.io import atomic_write_text, file_sha256

# An answer the model could not give is graded by no grader: it counts under this kind.
NO_ANSWER = "no_answer"
# Graders whose results say whether a sample passed (others only when given a threshold).
_PASSING_TYPES = ("string_check", "label_model", "label_match", "mongo_query")


@dataclass(frozen=True)
class GradeData:
    """The items to grade, the grader's JSON and what the run records about the file."""

    path: Path
    items: list[ReinforcementItem]
    spec: dict
    grader: Grader
    checksum: str

    def describe(self) -> dict:
        return describe_data(self.path, "reinforcement", self.items, self.checksum)


def load_grade_data(grader_path: Path, data_path: Path, limit: int | None = None) -> GradeData:
    """The grader (every problem in it reported at once) and the first `limit` items, each
    checked for the fields the grader reads."""
    spec = read_grader_file(grader_path)
    grader = parse_grader(spec)
    items = read_reinforcement_file(data_path, grader_item_fields(spec))
    return GradeData(Path(data_path), items[:limit], spec, grader, file_sha256(data_path))


def read_grader_file(path: Path) -> dict:
    """A grader definition's JSON."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise TunelabError("file_not_found", f"{path} does not exist.", path=path) from None
    except orjson.JSONDecodeError as err:
        text = f"the grader definition is not JSON: {err.msg}"
        raise TunelabError("invalid_grader_file", text, path=path) from None


def read_samples(path: Path, n_items: int) -> list[Sample]:
    """The first `n_items` samples of a JSONL file, one per line, in item order."""
    samples: list[Sample] = []
    with open_jsonl(path) as handle:
        for number, raw, _ in iter_bounded_lines(handle, MAX_LINE_BYTES):
            record = parse_line(path, number, raw)
            if record is not None:
                samples.append(_sample(record, path, number))
            if len(samples) == n_items:
                return samples
    raise TunelabError(
        "samples_too_few",
        f"{path} has {len(samples)} sample(s) for {n_items} item(s).",
        hint="write one sample per item, in the items' order (or pass --limit)",
        path=path,
    )


def _sample(record: object, path: Path, line: int) -> Sample:
    if isinstance(record, dict) and isinstance(record.get("output_text"), str):
        return Sample.from_text(record["output_text"])
    if isinstance(record, dict) and "output_json" in record:
        value = record["output_json"]
        return Sample(orjson.dumps(value).decode(), value)
    raise TunelabError(
        "invalid_sample",
        'a sample is {"output_text": "..."} or {"output_json": ...}',
        path=path,
        line=line,
    )


@dataclass(frozen=True, kw_only=True)
class GradeTaskResult(TaskResult):
    """What `evaluate_grader` returns; `answers` holds one row per item graded."""

    grader: dict  # name and type
    models: dict[str, dict]  # per answerer: mean_score, pass_rate, sub_scores, errors


def evaluate_grader(
    data: GradeData,
    *,
    model: str | None = None,
    samples_path: Path | None = None,
    max_tokens: int = 256,
    progress=None,
    cancel: threading.Event | None = None,
) -> GradeTaskResult:
    """Grade `model`'s answers to the items, or the samples of `samples_path` (one of the
    two); the answerer is named by the model, or the samples file's path."""
    name = model if model is not None else str(samples_path)
    if model is not None:
        samples, failures = _answers_of(model, data.items, max_tokens, progress, cancel)
    else:
        samples, failures = read_samples(samples_path, len(data.items)), {}
    rows = grade_all(data, samples, failures, _task(progress, data, len(samples)), cancel)
    figures = grade_figures(rows, defines_pass(data.grader))
    failed_all = rows and figures["n_errors"] == len(rows)
    return GradeTaskResult(
        grader={"name": data.grader.name, "type": data.grader.type},
        models={name: figures} if rows else {},
        answers={name: rows} if rows else {},
        partial=partial_of({name: rows}, [name], len(data.items)),
        error=f"no sample could be graded; first: {_first_error(rows)}" if failed_all else None,
    )


def _answers_of(model, items, max_tokens, progress, cancel) -> tuple[list[Sample], dict]:
    """The model's answers as samples (those given before a cancel), and why each failed
    answer failed, by item index."""
    conversations = [list(item.messages) for item in items]
    try:
        answers, _ = answer_all(
            model, conversations, max_tokens=max_tokens, progress=progress, cancel=cancel
        )
    except Interrupted as stop:
        answers = stop.done
    failures = {i: a.error for i, a in enumerate(answers) if a.error}
    return [Sample.from_text(a.text or "") for a in answers], failures


def _task(progress, data: GradeData, n: int):
    return progress(f"grader {data.grader.name}", n) if progress else None


def grade_all(data: GradeData, samples, failures: dict, advance, cancel) -> list[dict]:
    """One row per sample, in item order, until a cancel."""
    rows = []
    for index, (item, sample) in enumerate(zip(data.items, samples, strict=False)):
        if cancel is not None and cancel.is_set():
            break
        if index in failures:
            kind = data.grader.type
            result = GradeResult.failed(data.grader.name, kind, NO_ANSWER, failures[index])
        else:
            result = grade(data.grader, sample, item.to_record())
        rows.append(grade_row(item, sample, result))
        if advance is not None:
            advance(1)
    return rows


def grade_row(item: ReinforcementItem, sample: Sample, result: GradeResult) -> dict:
    """One item's row: what was asked and answered, and how it was graded."""
    users = [m.get("content") for m in item.messages if m.get("role") == "user"]
    return {
        "question": users[-1] if users and isinstance(users[-1], str) else "",
        "answer": sample.output_text,
        "score": result.score,
        "passed": result.passed,
        "sub_scores": dict(result.sub_scores),
        "error": result.error,
        "detail": result.detail,
        "source_line": item.source_line,
    }


def defines_pass(grader: Grader) -> bool:
    """Whether the grader says which samples pass: a check, a label, or a threshold."""
    return grader.type in _PASSING_TYPES or getattr(grader, "pass_threshold", None) is not None


def grade_figures(rows: list[dict], has_pass: bool) -> dict:
    """The mean score, the pass rate (None where the grader defines no pass), each
    sub-grader's mean, and the failures by kind."""
    n = len(rows)
    errors: dict[str, int] = {}
    for row in rows:
        if row["error"]:
            errors[row["error"]] = errors.get(row["error"], 0) + 1
    names = dict.fromkeys(name for row in rows for name in row["sub_scores"])
    return {
        "n_items": n,
        "mean_score": sum(row["score"] for row in rows) / n if n else None,
        "pass_rate": sum(row["passed"] is True for row in rows) / n if n and has_pass else None,
        "sub_scores": {
            name: _mean([row["sub_scores"][name] for row in rows if name in row["sub_scores"]])
            for name in names
        },
        "n_errors": sum(errors.values()),
        "errors_by_kind": errors,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _first_error(rows: list[dict]) -> str:
    row = rows[0]
    return f"{row['error']}: {row['detail']}" if row["detail"] else row["error"]


def write_grades(path: Path, rows: list[dict]) -> None:
    """Every item's row as JSONL, written atomically."""
    atomic_write_text(path, "".join(orjson.dumps(row).decode() + "\n" for row in rows))
