"""`format_dataset`: any source → OpenAI chat JSONL, deduplicated, split in two files.

read (lazy) → (reinforcement items) → drop duplicates → spool → split → write both outputs
atomically. With `to="reinforcement"` each example becomes a reinforcement item: its prompt,
with the answer kept as the item field `reference_answer` (see `data.reinforcement`).

The examples are spooled as JSON lines to an anonymous temporary file; memory holds only
their offsets, labels and 16-byte duplicate keys, so a large source does not need room for
all its examples. Outputs are checked before any work (no overwrite without `force`, never an
input), staged beside their final paths, and renamed into place together once both are
complete: a bad record anywhere in the source leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from tunelab.data.example import ChatExample
from tunelab.data.prompts import label_set_bytes, label_set_path
from tunelab.data.reinforcement import REFERENCE_FIELD, item_from_example
from tunelab.data.sources import SourceOptions, detect_kind, read_source
from tunelab.data.split import Duplicates, drop_duplicates, split_indices
from tunelab.errors import TunelabError, usage_error
from tunelab.io import check_output_path, commit, staged_write

PROGRESS_EVERY = 1000
# What `format_dataset` writes: chat examples, or reinforcement items.
TARGETS = ("chat", "reinforcement")

OPTION_FLAGS = {
    "question_field": "--question-field",
    "answer_field": "--answer-field",
    "context_field": "--context-field",
    "context_file": "--context-file",
    "text_column": "--text-column",
    "label_column": "--label-column",
    "prompt": "--instruction/--category-tag/--item-tag/--output-tag/--bare-label/--template",
    "schema": "the --*-table/--*-column flags",
    "max_conversations": "--max-conversations",
}


@dataclass
class FormatReport:
    source: str
    kind: str
    # Why this kind was chosen when it was detected; None when it was given.
    detection: str | None
    # Meaning → field/column name used (e.g. {"question": "question", "answer": "query"}).
    fields: dict[str, str]
    # Which of `fields` were detected rather than given.
    detected_fields: list[str]
    system: str | None
    # Examples read (duplicates included) and source items skipped on purpose.
    n_read: int
    n_skipped: int
    n_duplicates: int
    # The first few duplicates: {"line", "duplicate_of"}: source lines (JSON arrays: the
    # line an element starts on; databases: the conversation's number in id order).
    duplicates_sample: list[dict]
    n_train: int
    n_val: int
    train_output: str
    val_output: str | None
    # Short classification template only: the label set beside each output (see
    # `prompts.label_set_path`), since the prompts no longer list it.
    label_set_outputs: list[str] | None = None
    # Classification only: {"train": {label: count}, "val": {label: count}}.
    label_counts: dict[str, dict[str, int]] | None = None
    # The format written: "chat" or "reinforcement" (items with `reference_field`).
    to: str = "chat"
    reference_field: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def default_val_path(train_output: Path) -> Path:
    """`train.jsonl` → `val.jsonl`, `docs_train.jsonl` → `docs_val.jsonl`,
    any other name `out.jsonl` → `out.val.jsonl`."""
    name = train_output.name
    at = name.rfind("train")
    if at >= 0:
        return train_output.with_name(name[:at] + "val" + name[at + len("train") :])
    return train_output.with_name(f"{train_output.stem}.val{train_output.suffix}")


def format_dataset(
    source: Path,
    train_output: Path,
    val_output: Path | None = None,
    *,
    kind: str | None = None,
    options: SourceOptions | None = None,
    train_ratio: float = 0.8,
    seed: int = 42,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
    to: str = "chat",
    reference_field: str = REFERENCE_FIELD,
) -> FormatReport:
    """Convert `source` to chat JSONL (`to="reinforcement"`: reinforcement items whose
    answers are kept as `reference_field`) in `train_output` and `val_output`.

    `kind` None detects it. `train_ratio` 1.0 writes no validation file; below 1.0 the
    validation file is `val_output` or `default_val_path(train_output)`. `progress` is
    called with the number of examples read so far, every `PROGRESS_EVERY` examples.
    """
    source, train_output = Path(source), Path(train_output)
    options = options or SourceOptions()
    val_output = _val_path(train_output, val_output, train_ratio)
    _check_outputs(source, options, train_output, val_output, force)
    if not source.exists():
        raise TunelabError("source_not_found", f"{source} does not exist.", path=source)
    kind, detection = _resolve_kind(source, kind, options)
    reading = read_source(source, kind, options)
    examples, unanswered = _converted(reading.examples, to, reference_field)
    duplicates = Duplicates()
    with tempfile.TemporaryFile() as spool:
        offsets, labels = _spool(drop_duplicates(examples, duplicates), spool, progress)
        if not offsets:
            raise TunelabError("empty_source", f"{source} holds no examples.", path=source)
        train, val = split_indices(labels, train_ratio, seed)
        outputs = {train_output: train, val_output: val}
        label_sets = _label_sets(outputs, reading.labels, options)
        _write_outputs(spool, offsets, outputs, label_sets)
    return FormatReport(
        source=str(source),
        kind=kind,
        detection=detection,
        fields=reading.fields,
        detected_fields=reading.detected,
        system=reading.system,
        n_read=len(offsets) + duplicates.count,
        n_skipped=reading.skipped + unanswered[0],
        n_duplicates=duplicates.count,
        duplicates_sample=duplicates.sample,
        n_train=len(train),
        n_val=len(val),
        train_output=str(train_output),
        val_output=str(val_output) if val_output else None,
        label_counts=_label_counts(labels, train, val) if reading.labels else None,
        label_set_outputs=[str(path) for path in label_sets] or None,
        to=to,
        reference_field=reference_field if to == "reinforcement" else None,
    )


def _converted(examples: Iterable[ChatExample], to: str, reference_field: str):
    """The examples in the target format, and a one-element list counting those left out
    (filled as the lazy stream is read)."""
    if to not in TARGETS:
        raise usage_error(
            "unknown_target",
            f"cannot format to {to!r}.",
            hint=f"one of {', '.join(TARGETS)}",
        )
    left_out = [0]
    if to == "chat":
        return examples, left_out

    def items():
        for example in examples:
            item = item_from_example(example, reference_field)
            if item is None:
                left_out[0] += 1
            else:
                yield item

    return items(), left_out


def _val_path(train_output: Path, val_output: Path | None, train_ratio: float) -> Path | None:
    if not 0 < train_ratio <= 1:
        raise usage_error(
            "bad_train_ratio", f"--train-ratio must be above 0 and at most 1, not {train_ratio}."
        )
    if train_ratio == 1:
        if val_output is not None:
            raise usage_error(
                "no_validation_split",
                "--val-output was given but --train-ratio 1.0 leaves nothing for validation.",
                hint="lower --train-ratio, or drop --val-output",
            )
        return None
    return Path(val_output) if val_output is not None else default_val_path(train_output)


def _check_outputs(
    source: Path, options: SourceOptions, train: Path, val: Path | None, force: bool
) -> None:
    inputs = tuple(p for p in (source, options.context_file) if p is not None)
    check_output_path(train, force=force, inputs=inputs)
    if val is not None:
        if val.resolve() == train.resolve():
            raise usage_error(
                "same_output",
                f"the training and validation outputs are the same file ({train}).",
                hint="choose another --val-output",
            )
        check_output_path(val, force=force, inputs=inputs)
    if _keeps_label_set(options):
        for output in (train, val):
            if output is not None:
                check_output_path(label_set_path(output), force=force, inputs=inputs)


def _keeps_label_set(options: SourceOptions) -> bool:
    """Prompts that do not list the labels: the label set is written beside the outputs."""
    return options.prompt is not None and not options.prompt.lists_labels


def _label_sets(outputs: dict, labels: list[str], options: SourceOptions) -> dict[Path, bytes]:
    """Label set files to write with the outputs: {path: content}, empty when not needed."""
    if not labels or not _keeps_label_set(options):
        return {}
    content = label_set_bytes(labels, options.prompt)
    return {label_set_path(output): content for output in outputs if output is not None}


def _resolve_kind(source: Path, kind: str | None, options: SourceOptions) -> tuple[str, str | None]:
    """The kind to read `source` as, and why when it was detected."""
    detection = None
    if kind is None:
        found = detect_kind(source, options)
        kind, detection = found.kind, found.reason
    _check_options_apply(kind, options)
    return kind, detection


def _check_options_apply(kind: str, options: SourceOptions) -> None:
    misplaced = options.given_for_other_kinds(kind)
    if misplaced:
        flags = ", ".join(OPTION_FLAGS[name] for name in misplaced)
        raise usage_error(
            "option_not_applicable",
            f"{flags} do not apply to a {kind} source.",
            hint="drop them, or pass the --kind the source really is",
        )


def _spool(
    examples: Iterable[ChatExample], spool: IO[bytes], progress: Callable[[int], None] | None
) -> tuple[array, list]:
    """Write examples as JSON lines; return their offsets and labels."""
    offsets = array("q")
    labels: list[str | None] = []
    position = 0
    for example in examples:
        line = example.to_json_line()
        offsets.append(position)
        labels.append(example.label)
        spool.write(line)
        position += len(line)
        if progress and len(offsets) % PROGRESS_EVERY == 0:
            progress(len(offsets))
    return offsets, labels


def _write_outputs(
    spool: IO[bytes], offsets: array, outputs: dict, extra: dict[Path, bytes]
) -> None:
    """Write each output's lines (by index into the spool) and each `extra` file; rename all
    only when all are done."""
    staged = []
    with contextlib.ExitStack() as stack:
        for path, indices in outputs.items():
            if path is None:
                continue
            handle, tmp = stack.enter_context(staged_write(path, "wb"))
            for index in indices:
                spool.seek(offsets[index])
                handle.write(spool.readline())
            staged.append((tmp, path))
        for path, content in extra.items():
            handle, tmp = stack.enter_context(staged_write(path, "wb"))
            handle.write(content)
            staged.append((tmp, path))
    for tmp, path in staged:
        commit(tmp, path)


def _label_counts(
    labels: Sequence[str | None], train: list[int], val: list[int]
) -> dict[str, dict[str, int]]:
    def counts(indices: list[int]) -> dict[str, int]:
        return dict(sorted(Counter(str(labels[i]) for i in indices).items()))

    return {"train": counts(train), "val": counts(val)}
