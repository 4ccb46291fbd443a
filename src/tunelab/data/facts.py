"""Task-aware facts about a chat dataset: what kind of task it teaches, and its shape.

`TaskFacts` watches each example once, during `tunelab analyze`'s single streaming pass, and
keeps only counters: memory does not grow with the file, and every table of distinct values
(labels, collections, operators, system prompts) stops growing at `MAX_DISTINCT`. From those
counters `result()` decides the kind of task (MongoDB queries, classification,
conversations, or generic) and reports every family of facts, the kind saying which matters.
"""

from __future__ import annotations

import re
from collections import Counter

from tunelab.data.mongo_shape import describe_query

# Bound on each table of distinct values, so that a 200,000-example file of free text cannot
# grow memory; past it, new values are counted as "other" and the result says so.
MAX_DISTINCT = 1_000
# How many of the most frequent operators/collections/methods a result lists.
TOP_N = 20

# "queries": most answers read as MongoDB queries. A majority rather than all, so that a few
# malformed answers (which the facts report) do not hide what the dataset is for.
QUERY_MIN_SHARE = 0.5
# "classification": answers are labels, i.e. few distinct short strings, each seen repeatedly.
CLASSIFICATION_MAX_LABELS = 100
# Longer answers are sentences, not labels ("LOC", "billing_issue", "Positive").
LABEL_MAX_CHARS = 40
# Each label seen at least twice on average; otherwise they are free answers, not classes.
CLASSIFICATION_MIN_EXAMPLES_PER_LABEL = 2
# Nearly every answer must be short: a handful of stray long answers is noise worth a
# warning, a sizeable share means the answers are not labels.
CLASSIFICATION_MIN_SHORT_SHARE = 0.98
# Classes with fewer examples than this are rarely learned by fine-tuning: warn about them.
RARE_LABEL_MIN_EXAMPLES = 10
# "conversations": more than one user turn on average. The slack keeps a mostly single-turn
# set with a few follow-ups from counting as conversations.
CONVERSATION_MIN_MEAN_USER_TURNS = 1.25

# A block of short lines in one tag inside a user message, e.g. the label list that
# `tunelab format` puts in every classification prompt ("<categories>\nABBR\nDESC\n...").
_LIST_BLOCK = re.compile(r"<([A-Za-z_][\w.-]*)>\n((?:[^\n<]{1,40}\n){2,})</\1>")
# A block counts as the prompt's label list when it is the same in at least this share of
# the examples (the text to classify differs in each).
LABEL_LIST_MIN_SHARE = 0.5
# An answer wrapped in one XML-like tag, e.g. "<category>LOC</category>" (seed 003's format).
_WRAPPED = re.compile(r"\A<([A-Za-z_][\w.-]*)>\s*(.*?)\s*</\1>\Z", re.DOTALL)
_FIND_METHODS = frozenset({"find", "findOne"})


class _CappedCounter:
    """Counts per value for at most `cap` distinct values; later new values go to `overflow`."""

    def __init__(self, cap: int | None = None) -> None:
        self.counts: dict = {}
        self.cap = MAX_DISTINCT if cap is None else cap
        self.overflow = 0

    def add(self, key, n: int = 1) -> None:
        if key in self.counts:
            self.counts[key] += n
        elif len(self.counts) < self.cap:
            self.counts[key] = n
        else:
            self.overflow += n

    @property
    def capped(self) -> bool:
        return self.overflow > 0

    def top(self, n: int | None = None) -> dict:
        return dict(Counter(self.counts).most_common(n))


class _IntStats:
    """min/mean/max and counts per value of a small integer (turns, depth, stages)."""

    def __init__(self) -> None:
        self.values = _CappedCounter()
        self.n = self.total = 0
        self.min: int | None = None
        self.max: int | None = None

    def add(self, value: int, times: int = 1) -> None:
        self.values.add(value, times)
        self.n += times
        self.total += value * times
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    def summary(self) -> dict:
        return {
            "n": self.n,
            "min": self.min,
            "mean": round(self.total / self.n, 3) if self.n else None,
            "max": self.max,
            "counts": {str(k): v for k, v in sorted(self.values.counts.items())},
        }


def label_of(answer: str) -> tuple[str, str | None]:
    """The class label an answer carries and the XML-like tag wrapping it, if any."""
    answer = answer.strip()
    if answer.startswith("<"):
        wrapped = _WRAPPED.match(answer)
        if wrapped:
            return wrapped.group(2), wrapped.group(1)
    return answer, None


class TaskFacts:
    """Counters over a dataset's examples; `observe` each, then read `result()`."""

    def __init__(self) -> None:
        self.n_examples = 0
        # conversations
        # (user turns, assistant turns, has a system message) → examples
        self._shapes: dict[tuple[int, int, bool], int] = {}
        self.system_prompts = _CappedCounter()
        self.assistant_chars = 0
        self.total_chars = 0  # every message's text
        self.list_blocks = _CappedCounter()  # (hash, chars) of list blocks in user messages
        # classification: the final answer of each example, read as a label
        self.n_answers = 0
        self.labels = _CappedCounter()
        self.wrapper_tags = _CappedCounter(cap=10)
        self.n_long_answers = 0
        # queries
        self.n_queries = 0
        self.methods = _CappedCounter()
        self.operators = _CappedCounter()
        self.collections = _CappedCounter()
        self.pipeline_lengths = _IntStats()
        self.depths = _IntStats()
        self.chained = _CappedCounter()

    def observe(self, messages: list[dict]) -> None:
        """Count one example (OpenAI chat messages). Keeps no text beyond short labels.

        Called once per example of files with hundreds of thousands of them, so the loop is
        kept plain: turn counts go into one dict keyed by (user turns, assistant turns), and
        their statistics are derived when read.
        """
        self.n_examples += 1
        users = assistants = 0
        has_system = False
        answer = None
        for message in messages:
            role = message.get("role")
            text = message.get("content")
            if isinstance(text, str):
                self.total_chars += len(text)
            if role == "user":
                users += 1
                if isinstance(text, str) and "</" in text:
                    for found in _LIST_BLOCK.finditer(text):
                        self.list_blocks.add((hash(found.group(0)), len(found.group(0))))
            elif role == "assistant":
                assistants += 1
                content = message.get("content")
                if isinstance(content, str):
                    self.assistant_chars += len(content)
                    answer = content
            elif role == "system":
                content = message.get("content")
                # hash(): counting distinct prompts needs their identity, not their text.
                self.system_prompts.add(hash(content if isinstance(content, str) else ""))
                has_system = True
        key = (users, assistants, has_system)
        self._shapes[key] = self._shapes.get(key, 0) + 1
        if answer is not None:
            self._observe_answer(answer)

    def _turn_stats(self, index: int) -> _IntStats:
        stats = _IntStats()
        for key, count in self._shapes.items():
            stats.add(key[index], count)
        return stats

    @property
    def user_turns(self) -> _IntStats:
        return self._turn_stats(0)

    @property
    def assistant_turns(self) -> _IntStats:
        return self._turn_stats(1)

    @property
    def n_with_system(self) -> int:
        return sum(count for key, count in self._shapes.items() if key[2])

    @property
    def n_assistant_messages(self) -> int:
        return sum(key[1] * count for key, count in self._shapes.items())

    def _observe_answer(self, answer: str) -> None:
        self.n_answers += 1
        label, tag = label_of(answer)
        if len(label) > LABEL_MAX_CHARS:
            self.n_long_answers += 1
        else:
            self.labels.add(label)
            if tag is not None:
                self.wrapper_tags.add(tag)
        shape = describe_query(answer)
        if shape is None:
            return
        self.n_queries += 1
        self.methods.add(shape.method)
        for operator, count in shape.operators.items():
            self.operators.add(operator, count)
        if shape.collection is not None:
            self.collections.add(shape.collection)
        if shape.pipeline_length is not None:
            self.pipeline_lengths.add(shape.pipeline_length)
        self.depths.add(shape.depth)
        for call in shape.chained:
            self.chained.add(call)

    def kind(self) -> str:
        """ "queries", "conversations", "classification" or "generic"; see the thresholds above.

        Multi-turn data is conversations even when its answers are short and repeated: the
        labels of a classification set are one answer to one input.
        """
        answers = self.n_answers
        if answers and self.n_queries / answers >= QUERY_MIN_SHARE:
            return "queries"
        turns = self.user_turns
        if turns.n and turns.total / turns.n > CONVERSATION_MIN_MEAN_USER_TURNS:
            return "conversations"
        if self._looks_like_classification():
            return "classification"
        return "generic"

    def _looks_like_classification(self) -> bool:
        n_labels = len(self.labels.counts)
        return (
            self.n_answers > 0
            and not self.labels.capped
            and 0 < n_labels <= CLASSIFICATION_MAX_LABELS
            and self.n_answers >= CLASSIFICATION_MIN_EXAMPLES_PER_LABEL * n_labels
            and 1 - self.n_long_answers / self.n_answers >= CLASSIFICATION_MIN_SHORT_SHARE
        )

    def result(self) -> dict:
        """JSON-ready facts: `kind`, the three families, and `notes` for that kind."""
        kind = self.kind()
        return {
            "kind": kind,
            "n_examples": self.n_examples,
            "queries": self._query_facts(),
            "classification": self._classification_facts(kind),
            "conversations": self._conversation_facts(),
            "notes": self._notes(kind),
        }

    def _query_facts(self) -> dict:
        methods = self.methods.counts
        n_find = sum(methods.get(name, 0) for name in _FIND_METHODS)
        n_aggregate = methods.get("aggregate", 0)
        n_json = methods.get("json", 0)
        return {
            "n_answers": self.n_answers,
            "n_queries": self.n_queries,
            "unreadable_share": _share(self.n_answers - self.n_queries, self.n_answers),
            "by_type": {
                "find": n_find,
                "aggregate": n_aggregate,
                "json": n_json,
                "other": self.n_queries - n_find - n_aggregate - n_json,
            },
            "methods": self.methods.top(TOP_N),
            "operators": self.operators.top(TOP_N),
            "n_distinct_operators": len(self.operators.counts),
            "capped": [
                name
                for name, table in (
                    ("collections", self.collections),
                    ("operators", self.operators),
                    ("methods", self.methods),
                )
                if table.capped
            ],
            "collections": self.collections.top(TOP_N),
            "n_distinct_collections": len(self.collections.counts),
            "chained": self.chained.top(TOP_N),
            "pipeline_length": self.pipeline_lengths.summary(),
            "depth": self.depths.summary(),
        }

    def _classification_facts(self, kind: str) -> dict:
        counts = self.labels.counts
        n_labeled = sum(counts.values())
        # Outside classification the "labels" are just repeated answers: list a few only.
        shown = CLASSIFICATION_MAX_LABELS if kind == "classification" else TOP_N
        ranked = Counter(counts).most_common(shown)
        largest = max(counts.values()) if counts else 0
        smallest = min(counts.values()) if counts else 0
        return {
            "n_labels": len(counts),
            "labels": [
                {"label": label, "count": count, "share": _share(count, n_labeled)}
                for label, count in ranked
            ],
            "imbalance_ratio": round(largest / smallest, 3) if smallest else None,
            "majority_baseline_accuracy": _share(largest, self.n_answers),
            "rare_labels": sorted(
                label for label, count in counts.items() if count < RARE_LABEL_MIN_EXAMPLES
            )[:CLASSIFICATION_MAX_LABELS],
            "rare_label_min_examples": RARE_LABEL_MIN_EXAMPLES,
            "labels_capped": self.labels.capped,
            "wrapper_tag": next(iter(self.wrapper_tags.top(1)), None),
            "n_long_answers": self.n_long_answers,
            "label_list": self._label_list(),
        }

    def _label_list(self) -> dict | None:
        """The list of labels repeated in every prompt, and its share of all the text."""
        top = Counter(self.list_blocks.counts).most_common(1)
        if not top or top[0][1] < LABEL_LIST_MIN_SHARE * self.n_examples:
            return None
        (_, chars), n_examples = top[0]
        return {
            "n_examples": n_examples,
            "chars_per_example": chars,
            "share_of_text": _share(chars * n_examples, self.total_chars),
        }

    def _conversation_facts(self) -> dict:
        return {
            "user_turns": self.user_turns.summary(),
            "assistant_turns": self.assistant_turns.summary(),
            "system_share": _share(self.n_with_system, self.n_examples),
            "n_distinct_system_prompts": len(self.system_prompts.counts),
            "system_prompts_capped": self.system_prompts.capped,
            "mean_assistant_chars": (
                round(self.assistant_chars / self.n_assistant_messages, 1)
                if self.n_assistant_messages
                else None
            ),
        }

    def _notes(self, kind: str) -> list[str]:
        """What a reader of this kind of dataset should look at first."""
        if kind == "queries":
            return self._query_notes()
        if kind == "classification":
            return self._classification_notes()
        if self.system_prompts.capped:
            return [f"more than {MAX_DISTINCT:,} distinct system prompts: counted the first"]
        return []

    def _query_notes(self) -> list[str]:
        notes = [
            f"more than {MAX_DISTINCT:,} distinct {name}: the first {MAX_DISTINCT:,} are "
            f"counted, {table.overflow:,} later uses are not broken down"
            for name, table in (
                ("collections", self.collections),
                ("operators", self.operators),
                ("query methods", self.methods),
            )
            if table.capped
        ]
        unreadable = self.n_answers - self.n_queries
        if unreadable:
            notes.append(f"{unreadable:,} of {self.n_answers:,} answers do not read as a query")
        return notes

    def _classification_notes(self) -> list[str]:
        notes = []
        rare = [label for label, n in self.labels.counts.items() if n < RARE_LABEL_MIN_EXAMPLES]
        if rare:
            notes.append(
                f"{len(rare)} label(s) with fewer than {RARE_LABEL_MIN_EXAMPLES} examples: "
                + ", ".join(sorted(rare)[:10])
            )
        if self.n_long_answers:
            notes.append(
                f"{self.n_long_answers:,} answer(s) longer than {LABEL_MAX_CHARS} characters "
                "are not counted as labels"
            )
        return notes


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
