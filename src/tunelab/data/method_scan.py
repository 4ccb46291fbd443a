"""Validation of preference and reinforcement files: one streaming pass, the same findings.

`scan_method_file` reads a `dpo` or `reinforcement` file line by line with the checks of
`data.preference` and `data.reinforcement`, and fills the same `FileScan` the chat validator
fills (findings with stable codes and lines, duplicates, per-example token counts), so the
report, `--val`'s `in_both_files` and the analysis work alike for every method.
`validate_data_file` is `validate_file` for any of the three methods, detected or given.

Token counts per example:
- dpo: the prompt and both answers (the prompt with the preferred answer, plus the
  non-preferred answer's own tokens); trained tokens: both answers;
- reinforcement: the prompt plus `max_answer_tokens`, the budget the model may spend on
  each answer it writes during training; trained tokens: that budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tunelab.catalog import ModelSpec, context_limit, resolve_model
from tunelab.data.jsonl import iter_bounded_lines, open_jsonl
from tunelab.data.methods import has_error, resolve_method
from tunelab.data.preference import check_preference_record, example_from_record
from tunelab.data.reinforcement import check_reinforcement_record
from tunelab.data.tokens import RESERVED_SPECIAL_TOKENS, load_counter
from tunelab.data.validate import (
    BOM,
    MAX_LINE_BYTES,
    FileScan,
    ValidationReport,
    finish_scan,
    report_bad_line,
    report_duplicate_keys,
    report_long_line,
    scan_pair,
    special_token_pattern,
    validate_file,
)
from tunelab.errors import TunelabError

BATCH_SIZE = 1024
# What a reinforcement answer may take when nothing else is said: the trainer's default.
DEFAULT_MAX_ANSWER_TOKENS = 512


@dataclass(frozen=True)
class MethodOptions:
    """What scanning a dpo or reinforcement file needs besides the file."""

    method: str
    grader_fields: tuple[str, ...] = ()  # reinforcement: the item fields the grader reads
    max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS


@dataclass
class _Pending:
    lines: list = field(default_factory=list)
    records: list = field(default_factory=list)


class _MethodScanner:
    def __init__(self, scan: FileScan, options: MethodOptions, counter, context) -> None:
        self.scan, self.options, self.counter, self.context = scan, options, counter, context
        tokens = counter.special_tokens if counter else RESERVED_SPECIAL_TOKENS
        self.special = special_token_pattern(tokens)
        self.pending = _Pending()

    def run(self, progress: Callable[[int], None] | None) -> None:
        with open_jsonl(self.scan.path) as handle:
            for number, raw, length in iter_bounded_lines(handle, MAX_LINE_BYTES):
                if raw is None:
                    report_long_line(self.scan, number, length)
                    continue
                self._line(number, raw)
                if len(self.pending.lines) >= BATCH_SIZE:
                    self._flush()
                    if progress:
                        progress(handle.tell())
        self._flush()

    def _line(self, number: int, raw: bytes) -> None:
        if number == 1 and raw.startswith(BOM):
            self.scan.add("bom", 1, "the file starts with a byte-order mark; save it without")
            raw = raw[len(BOM) :]
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            report_bad_line(self.scan, number, raw, err)
            return
        self.scan.n_examples += 1
        report_duplicate_keys(self.scan, number, raw)
        problems = self._check(record)
        for code, message in problems:
            self.scan.add(code, number, message)
        if not has_error(problems):
            self.pending.lines.append(number)
            self.pending.records.append(record)

    def _check(self, record: object) -> list:
        if self.options.method == "dpo":
            return check_preference_record(record, self.special)
        return check_reinforcement_record(record, self.options.grader_fields, self.special)

    def _flush(self) -> None:
        pending, self.pending = self.pending, _Pending()
        if not pending.lines:
            return
        counts = self._count(pending.records)
        for i, (line, record) in enumerate(zip(pending.lines, pending.records, strict=True)):
            if counts is not None and i in counts[2]:
                self.scan.add("template_error", line, counts[2][i])
                continue
            self._store(line, record, None if counts is None else (counts[0][i], counts[1][i]))

    def _store(self, line: int, record: dict, tokens: tuple[int, int] | None) -> None:
        scan = self.scan
        scan.n_valid += 1
        scan.lines.append(line)
        scan.hashes.append(hash(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)))
        prompt = _prompt(record, self.options.method)
        roles = {m["role"] for m in prompt}
        scan.n_missing_system += "system" not in roles
        scan.n_missing_user += "user" not in roles
        scan.n_messages.append(_n_messages(record, self.options.method))
        if tokens is None:
            return
        total, trained = tokens
        scan.tokens.append(total)
        scan.assistant_tokens.append(trained)
        if self.context and total > self.context:
            over = f"over the {self.context:,}-token context; training truncates it"
            text = f"{total:,} tokens, {over}"
            scan.add("too_long", line, text)

    def _count(self, records: list) -> tuple[list, list, dict] | None:
        """(total tokens, trained tokens, {index: template error}) per record."""
        if self.counter is None:
            return None
        if self.options.method == "reinforcement":
            counts = self.counter.count([r["messages"] for r in records])
            budget = self.options.max_answer_tokens
            totals = [int(t) + budget for t in counts.total]
            return totals, [budget] * len(records), counts.failures
        pairs = [example_from_record(r).conversations() for r in records]
        preferred = self.counter.count([p for p, _ in pairs])
        rejected = self.counter.count([r for _, r in pairs])
        totals = (preferred.total + rejected.assistant).tolist()
        trained = (preferred.assistant + rejected.assistant).tolist()
        return totals, trained, {**rejected.failures, **preferred.failures}


def _prompt(record: dict, method: str) -> list[dict]:
    return record["input"]["messages"] if method == "dpo" else record["messages"]


def _n_messages(record: dict, method: str) -> int:
    if method == "dpo":
        outputs = len(record["preferred_output"]) + len(record["non_preferred_output"])
        return len(record["input"]["messages"]) + outputs
    return len(record["messages"])


def scan_method_file(
    path: str | Path,
    options: MethodOptions,
    *,
    counter=None,
    context_limit: int | None = None,
    label: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> FileScan:
    """One pass over a dpo or reinforcement file: findings, and token counts with `counter`."""
    scan = FileScan(str(path), label=label)
    _MethodScanner(scan, options, counter, context_limit).run(progress)
    finish_scan(scan)
    return scan


def scan_method_files(
    path: str | Path,
    val_path: str | Path | None,
    options: MethodOptions,
    spec: ModelSpec | None,
    counter=None,
    progress: Callable[[str, int], None] | None = None,
) -> tuple[FileScan, FileScan | None]:
    """`scan_files` for a dpo or reinforcement training file and its validation file."""
    context = context_limit(spec) if spec is not None else None

    def scan_one(file, label, report) -> FileScan:
        return scan_method_file(
            file, options, counter=counter, context_limit=context, label=label, progress=report
        )

    return scan_pair(path, val_path, spec, progress, scan_one)


def validate_data_file(
    path: str | Path,
    *,
    method: str | None = None,
    val_path: str | Path | None = None,
    model: str | ModelSpec | None = None,
    grader_fields: Iterable[str] = (),
    progress: Callable[[str, int], None] | None = None,
) -> ValidationReport:
    """Validate a training file of any method (`method` None: detected from the file).

    `grader_fields` (reinforcement): item fields the grader reads, each required of every
    item. The report's `method` says which format was checked, and `method_detection` why.
    """
    found = resolve_method(path, method)
    if found.method == "supervised":
        report = validate_file(path, val_path=val_path, model=model, progress=progress)
    else:
        spec = resolve_model(model) if isinstance(model, str) else model
        counter = load_counter(spec) if spec is not None else None
        options = MethodOptions(found.method, tuple(grader_fields))
        train, val = scan_method_files(path, val_path, options, spec, counter, progress)
        notes = [] if spec else ["no --model: context length and provider minimum not checked"]
        report = ValidationReport(train, val, spec, notes)
    report.method, report.method_detection = found.method, found.reason
    return report


def require_valid(
    path: str | Path,
    *,
    method: str | None = None,
    val_path: str | Path | None = None,
    model: str | ModelSpec | None = None,
    progress: Callable[[str, int], None] | None = None,
    refused: str = "nothing was trained",
    grader_fields: Iterable[str] = (),
) -> ValidationReport:
    """`validate_data_file` for the training `method` (None: detected from the file),
    raising `invalid_training_data` when the data has errors (`grader_fields`: those every
    reinforcement item must have).

    Every way of training (a job on any provider, `tunelab train`, the server, the studio)
    passes through here first; `refused` says what did not happen. The raised error carries
    the report as `.report`, for front ends that list the findings.
    """
    report = validate_data_file(
        path,
        method=method,
        val_path=val_path,
        model=model,
        grader_fields=grader_fields,
        progress=progress,
    )
    if report.ok:
        return report
    error = TunelabError(
        "invalid_training_data",
        f"the data has {report.n_errors:,} error(s); {refused}.",
        hint=f"`tunelab validate {path}` lists every finding",
        path=path,
    )
    error.report = report
    raise error
