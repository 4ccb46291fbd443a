"""Exact duplicates out, then a deterministic, stratified train/validation split.

Duplicates are examples with the same `ChatExample.dedupe_key()`; the first copy is kept.
Only a 16-byte hash of each key is held, so memory stays small for large sources.

The split shuffles each label's examples with `random.Random(seed)` and puts
`round(n * train_ratio)` of them in train, but never all nor none of a label that has at
least two examples: every such label appears in both files. A label with a single example
goes to train (the model can learn it; a validation score on one example says little).
Unlabelled sources are one group. Each side is then shuffled, so neither file is ordered
by label or by source position. Same input, ratio and seed → same split.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from tunelab.data.example import ChatExample

KEY_BYTES = 16


@dataclass
class Duplicates:
    count: int = 0
    # The first few: {"line": line of the dropped copy, "duplicate_of": line of the kept one}.
    sample: list[dict] = field(default_factory=list)


def drop_duplicates(
    examples: Iterable[ChatExample], found: Duplicates, sample_size: int = 5
) -> Iterator[ChatExample]:
    """The examples without exact repeats; `found` counts what was dropped."""
    first_line: dict[bytes, int | None] = {}
    for example in examples:
        key = hashlib.blake2b(example.dedupe_key(), digest_size=KEY_BYTES).digest()
        if key in first_line:
            found.count += 1
            if len(found.sample) < sample_size:
                found.sample.append({"line": example.source_line, "duplicate_of": first_line[key]})
            continue
        first_line[key] = example.source_line
        yield example


def split_indices(
    labels: Sequence[str | None], train_ratio: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices into `labels` for train and validation, each in shuffled order."""
    if not 0 < train_ratio <= 1:
        raise ValueError(f"train_ratio must be in (0, 1], got {train_ratio}")
    groups: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        groups["" if label is None else label].append(index)
    rng = random.Random(seed)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(groups):  # sorted: the same seed gives the same draws
        members = groups[label]
        rng.shuffle(members)
        n_train = train_count(len(members), train_ratio)
        train += members[:n_train]
        val += members[n_train:]
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def train_count(n: int, train_ratio: float) -> int:
    """How many of a group's `n` examples go to train."""
    if train_ratio >= 1 or n < 2:
        return n
    return min(max(int(n * train_ratio + 0.5), 1), n - 1)
