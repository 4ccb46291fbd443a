"""render_html: a self-contained, escaped, well-formed report for every kind of dataset."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest

from tunelab import __version__
from tunelab.data.facts import TaskFacts
from tunelab.data.report_html import render_html

HOSTILE = "<script>alert(1)</script>"
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source", "area"}
WHEN = datetime(2026, 11, 22, 9, 30, tzinfo=timezone.utc)


class StrictParser(HTMLParser):
    """Fails on any tag closed out of order or left open; keeps the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


def distribution(lo: float, hi: float) -> dict:
    return {
        "min": lo,
        "max": hi,
        "mean": (lo + hi) / 2,
        "median": (lo + hi) / 2,
        "p5": lo + 1,
        "p95": hi - 1,
        "histogram": {"edges": [lo, (lo + hi) / 2, hi], "counts": [7, 3]},
    }


def task_for(examples: list[list[dict]]) -> dict:
    facts = TaskFacts()
    for messages in examples:
        facts.observe(messages)
    return facts.result()


def qa(user: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


QUERIES = [qa("q", "db.t.aggregate([{ $match: { a: { $gt: 1 } } }, { $count: 'n' }])")] * 3
LABELS = [qa(f"q{i}", f"<category>{'LOC' if i % 3 else 'HUM'}</category>") for i in range(30)]
CHATS = [qa("hi", "hello") + qa("and?", "more") for _ in range(4)]


def analysis(task: dict | None = None, **changes) -> dict:
    base = {
        "file": "train.jsonl",
        "model": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "tokenizer": "o200k_base",
        "exact_counts": True,
        "n_examples": 1200,
        "n_epochs": 3,
        "total_tokens": 98765,
        "billed_tokens": 296295,
        "estimated_cost_usd": 0.89,
        "costs": [
            {
                "provider": "openai",
                "model": "gpt-4o-mini-2024-07-18",
                "usd_per_million": 3.0,
                "estimated_cost_usd": 0.89,
                "as_of": "2025-06-01",
            },
            {
                "provider": "together",
                "model": "llama-8b",
                "usd_per_million": 0.48,
                "estimated_cost_usd": 0.14,
                "as_of": "2025-06-01",
            },
        ],
        "estimated_train_seconds": None,
        "context_limit": 65536,
        "n_over_context": 2,
        "n_missing_system": 0,
        "n_missing_user": 0,
        "validation": {"n_errors": 1, "n_warnings": 4, "by_code": {"duplicate_example": 4}},
        "distributions": {
            "messages_per_example": distribution(2, 6),
            "tokens_per_example": distribution(20, 400),
            "assistant_tokens_per_example": distribution(5, 120),
        },
        "task": task if task is not None else task_for(QUERIES),
        "val": None,
    }
    base.update(changes)
    return base


def test_page_is_well_formed_and_self_contained():
    page = render_html(analysis(), generated_at=WHEN)
    parser = parse(page)
    assert page.startswith("<!DOCTYPE html>")
    lowered = page.lower()
    for outside in ("http", "<script", "<link", "@import", "url(", "src=", "@font-face"):
        assert outside not in lowered, outside
    assert parser.tags.count("svg") == 6  # 3 distributions; operators, stages, depth
    assert f"tunelab {__version__} on 2026-11-22 09:30 UTC" in page


def test_summary_validation_histograms_and_costs_are_shown():
    text = " ".join(parse(render_html(analysis(), generated_at=WHEN)).text)
    for expected in ("1,200", "98,765", "296,295", "$0.89", "duplicate_example"):
        assert expected in text
    assert "Examples over the context limit (65,536 tokens)" in text
    assert "p5 21" in text and "median 210" in text and "p95 399" in text  # markers
    costs = text[text.index("Cost comparison") :]
    assert costs.index("llama-8b") < costs.index("gpt-4o-mini-2024-07-18")  # cheapest first


def test_target_model_row_is_highlighted():
    page = render_html(analysis(), generated_at=WHEN)
    assert '<tr class="current"><td>openai</td><td>gpt-4o-mini-2024-07-18</td>' in page


def test_hostile_text_is_escaped_everywhere():
    task = task_for(LABELS)
    task["classification"]["labels"][0]["label"] = HOSTILE
    task["notes"] = [HOSTILE]
    data = analysis(
        task,
        file=HOSTILE,
        model=HOSTILE,
        validation={"n_errors": 1, "n_warnings": 0, "by_code": {HOSTILE: 1}},
        costs=[{"provider": HOSTILE, "model": '"><img onerror=x>', "as_of": HOSTILE}],
    )
    page = render_html(data, generated_at=WHEN)
    parser = parse(page)
    assert "<script" not in page and "<img" not in page
    assert "script" not in parser.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert HOSTILE in "".join(parser.text)  # shown to the reader as text


@pytest.mark.parametrize(
    ("examples", "title", "expected"),
    [
        (QUERIES, "Task: MongoDB queries", ["Operators used", "$match", "$count", "Pipeline"]),
        (LABELS, "Task: Classification", ["Label distribution", "LOC", "HUM", "<category>"]),
        (CHATS, "Task: Conversations", ["User turns per example", "With system prompt"]),
        (
            [qa("q", "A free answer, quite long, longer than any label would be.")],
            "Task: Generic chat",
            ["Answer length"],
        ),
    ],
)
def test_each_kind_shows_its_facts(examples, title, expected):
    task = task_for(examples)
    parser = parse(render_html(analysis(task), generated_at=WHEN))
    text = " ".join(parser.text)
    assert title in text
    for item in expected:
        assert item in text, item
    others = {"Task: MongoDB queries", "Task: Classification", "Task: Conversations"} - {title}
    assert not any(other in text for other in others)


def test_label_chart_shows_counts_and_shares():
    text = " ".join(parse(render_html(analysis(task_for(LABELS)), generated_at=WHEN)).text)
    assert "20 (66.7%)" in text and "10 (33.3%)" in text
    assert "66.7%" in text  # majority-class baseline


def test_validation_file_section_only_when_present():
    without = " ".join(parse(render_html(analysis(), generated_at=WHEN)).text)
    assert "Validation file" not in without
    val = {"file": "val.jsonl", "n_examples": 300, "total_tokens": 24000, "n_over_context": 0}
    val["distributions"] = {"tokens_per_example": distribution(10, 90)}
    val["validation"] = {"n_errors": 0, "n_warnings": 0, "by_code": {}}
    text = " ".join(parse(render_html(analysis(val=val), generated_at=WHEN)).text)
    assert "Validation file" in text and "val.jsonl" in text and "24,000" in text


def test_missing_and_null_keys_do_not_break_the_page():
    parse(render_html({}))
    nulls = {key: None for key in analysis()}
    text = " ".join(parse(render_html(nulls)).text)
    assert "Dataset analysis" in text and "—" in text


def test_malformed_parts_are_skipped_not_fatal():
    data = analysis(
        task={"kind": "queries", "queries": {"operators": {"$match": "many"}, "depth": None}},
        costs=[None, "x", {"provider": "local"}],
        validation={"by_code": None, "n_errors": "two"},
        distributions={
            "tokens_per_example": {"histogram": {"edges": [0, 1], "counts": [1, 2]}},
            "messages_per_example": {"histogram": {"edges": [0, "a"], "counts": [1]}},
            "assistant_tokens_per_example": "oops",
        },
        estimated_train_seconds=float("nan"),
    )
    text = " ".join(parse(render_html(data)).text)
    assert text.count("No histogram.") == 2
    assert "Nothing to show." in text


def test_render_does_not_modify_its_input():
    data = analysis(task_for(LABELS))
    before = copy.deepcopy(data)
    render_html(data)
    assert data == before
