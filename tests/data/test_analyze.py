"""analyze_file: epochs, billed tokens, costs from the price table, local training time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

from tunelab.data.analyze import analyze_file, billed_tokens, distribution, recommended_epochs
from tunelab.data.pricing import load_prices, price_for
from tunelab.errors import TunelabError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "validate"
CLEAN = FIXTURES / "clean.jsonl"


def cookbook_total(path: Path) -> tuple[int, int]:
    from test_tokens import cookbook_counts

    counts = [
        cookbook_counts(orjson.loads(line)["messages"]) for line in path.read_bytes().splitlines()
    ]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


@pytest.mark.parametrize(
    ("n", "epochs"),
    [
        (0, 0),
        (1, 25),
        (3, 25),
        (4, 25),
        (5, 20),
        (12, 8),
        (33, 3),
        (34, 3),
        (8_333, 3),
        (8_334, 2),
        (12_500, 2),
        (12_501, 1),
        (1_000_000, 1),
    ],
)
def test_recommended_epochs_follow_the_cookbook(n, epochs):
    assert recommended_epochs(n) == epochs


def test_billed_tokens_cap_each_example_at_the_context():
    tokens = np.array([10, 20_000, 5])
    assert billed_tokens(tokens, 16_385, 2) == (10 + 16_385 + 5) * 2
    assert billed_tokens(tokens, None, 3) == 20_015 * 3


def test_distribution_statistics_and_histogram():
    d = distribution(np.array([1, 2, 2, 3, 10]))
    assert (d["min"], d["max"], d["mean"], d["median"]) == (1, 10, 3.6, 2.0)
    assert d["p5"] == pytest.approx(1.2) and d["p95"] == pytest.approx(8.6)
    # a small range: one bin per value
    assert d["histogram"]["edges"] == list(range(1, 12))
    assert d["histogram"]["counts"] == [1, 2, 1, 0, 0, 0, 0, 0, 0, 1]
    wide = distribution(np.arange(1000))
    assert len(wide["histogram"]["counts"]) == 20 and sum(wide["histogram"]["counts"]) == 1000
    assert distribution(np.array([], dtype=np.int64))["median"] is None


def test_analysis_of_a_clean_file_for_gpt_35():
    a = analyze_file(CLEAN, model="gpt-3.5-turbo")
    total, assistant = cookbook_total(CLEAN)
    assert (a.model, a.provider, a.tokenizer, a.exact_counts) == (
        "gpt-3.5-turbo-0125",
        "openai",
        "cl100k_base",
        True,
    )
    assert (a.n_examples, a.total_tokens, a.total_assistant_tokens) == (
        12,
        total,
        assistant,
    )
    assert a.n_epochs == 8 and a.billed_tokens == total * 8
    assert a.estimated_cost_usd == pytest.approx(total * 8 / 1e6 * 8.00)
    assert a.context_limit == 16_385 and a.n_over_context == 0
    assert (a.n_missing_system, a.n_missing_user) == (1, 0)
    assert a.distributions["messages_per_example"]["max"] == 5
    assert a.validation == {"ok": True, "n_errors": 0, "n_warnings": 0, "by_code": {}}
    assert a.estimated_train_seconds is None and a.val is None
    assert "kind" in a.task


def test_costs_compare_the_same_tokens_on_every_priced_model():
    a = analyze_file(CLEAN, model="gpt-4o-mini")
    prices = load_prices()
    assert len(a.costs) == len(prices)
    for cost in a.costs:
        expected = a.billed_tokens / 1e6 * cost["usd_per_million"]
        assert cost["estimated_cost_usd"] == pytest.approx(expected, abs=1e-6)
        assert cost["as_of"] and cost["source"].startswith("https://")
    own = price_for(prices, "openai", "gpt-4o-mini-2024-07-18")
    assert own.usd_per_million == 3.00
    assert a.estimated_cost_usd == pytest.approx(a.billed_tokens / 1e6 * 3.00)
    together = {(c["model"], c["method"]) for c in a.costs if c["provider"] == "together"}
    assert ("Qwen/Qwen3-8B", "lora") in together and ("Qwen/Qwen3-8B", "full") in together


def test_a_prices_file_overrides_the_shipped_table(tmp_path):
    override = tmp_path / "prices.json"
    override.write_text(
        json.dumps(
            {
                "providers": {
                    "openai": {
                        "as_of": "2026-06-01",
                        "models": {"gpt-4o-mini-2024-07-18": {"standard": 1.0}},
                    }
                }
            }
        )
    )
    a = analyze_file(CLEAN, model="gpt-4o-mini", prices=override)
    assert a.estimated_cost_usd == pytest.approx(a.billed_tokens / 1e6)
    mini = next(c for c in a.costs if c["model"] == "gpt-4o-mini-2024-07-18")
    assert mini["as_of"] == "2026-06-01"
    # models the file does not name keep their shipped price
    assert price_for(load_prices(override), "openai", "gpt-4o-2024-08-06").usd_per_million == 25.0


@pytest.mark.parametrize("content", ["not json", '{"providers": {"openai": {"models": {"m": 3}}}}'])
def test_a_bad_prices_file_is_a_user_error(tmp_path, content):
    bad = tmp_path / "prices.json"
    bad.write_text(content)
    with pytest.raises(TunelabError) as raised:
        analyze_file(CLEAN, model="gpt-4o-mini", prices=bad)
    assert raised.value.code == "invalid_prices_file"


def test_an_invalid_file_is_still_analyzed(tmp_path):
    lines = CLEAN.read_bytes().splitlines()
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([lines[0], b"{broken", lines[1], b'{"messages": []}']) + b"\n")
    a = analyze_file(path, model="gpt-4o-mini")
    assert (a.n_examples, a.n_invalid_examples) == (2, 2)
    assert a.validation["ok"] is False
    assert a.validation["by_code"] == {
        "empty_messages": 1,
        "invalid_json": 1,
        "too_few_examples": 1,
    }
    assert a.total_tokens > 0


def test_validation_file_statistics(tmp_path):
    lines = CLEAN.read_bytes().splitlines()
    val = tmp_path / "val.jsonl"
    val.write_bytes(b"\n".join([lines[0], lines[-1]]) + b"\n")
    a = analyze_file(CLEAN, val_path=val, model="gpt-4o-mini")
    assert a.val.n_examples == 2
    assert a.val.validation["by_code"] == {"in_both_files": 2}
    assert a.validation["n_errors"] == 2
    assert (
        a.val.distributions["tokens_per_example"]["max"]
        <= a.distributions["tokens_per_example"]["max"]
    )


def test_local_models_have_no_price_and_use_measured_throughput(tmp_path, isolated_home):
    from test_tokens import build_tokenizer

    model = tmp_path / "tok"
    build_tokenizer(model, max_length=4096)
    a = analyze_file(CLEAN, model=str(model))
    assert a.provider == "local" and a.estimated_cost_usd is None
    assert a.estimated_train_seconds is None
    assert any("no measured training throughput" in note for note in a.notes)
    measured = {"tokens_per_second": 2000.0, "measured_at": "2026-01-01T00:00:00Z", "device": "cpu"}
    (isolated_home / "throughput.json").write_text(json.dumps({str(model): measured}))
    a = analyze_file(CLEAN, model=str(model))
    assert a.estimated_train_seconds == pytest.approx(a.billed_tokens / 2000.0, abs=0.1)
    assert a.throughput == {**measured, "method": "lora"}  # an old-format record


def test_analysis_is_json_ready():
    a = analyze_file(CLEAN, model="gpt-4.1-nano").to_json()
    assert json.loads(orjson.dumps(a)) == json.loads(json.dumps(a))
    for key in (
        "n_examples",
        "n_epochs",
        "billed_tokens",
        "estimated_cost_usd",
        "model",
        "provider",
        "tokenizer",
        "exact_counts",
        "distributions",
        "context_limit",
        "n_over_context",
        "n_missing_system",
        "n_missing_user",
        "total_tokens",
        "validation",
        "costs",
        "estimated_train_seconds",
        "task",
        "val",
    ):
        assert key in a
    for name in ("messages_per_example", "tokens_per_example", "assistant_tokens_per_example"):
        d = a["distributions"][name]
        assert set(d) == {"min", "max", "mean", "median", "p5", "p95", "histogram"}
        assert len(d["histogram"]["edges"]) == len(d["histogram"]["counts"]) + 1


def test_the_label_list_of_classification_prompts_is_costed(tmp_path):
    from importlib import resources

    from tunelab.data.formatter import format_dataset

    sample = resources.files("tunelab") / "resources" / "samples" / "trec_sample.tsv"
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    format_dataset(Path(str(sample)), train, val, train_ratio=0.8, seed=1)
    a = analyze_file(train, model="gpt-4o-mini")

    listed = a.task["classification"]["label_list"]
    assert listed["n_examples"] == a.n_examples
    block = "<categories>\nABBR\nDESC\nENTY\nHUM\nLOC\nNUM\n</categories>"
    assert listed["chars_per_example"] == len(block)
    assert 0.1 < listed["share_of_tokens"] < 0.9
    assert listed["billed_tokens"] == round(a.billed_tokens * listed["share_of_tokens"])
    assert listed["estimated_cost_usd"] == pytest.approx(
        a.estimated_cost_usd * listed["share_of_tokens"], abs=1e-4
    )
    assert any("label list repeated in every prompt" in n for n in a.task["notes"])


@pytest.mark.parametrize(("column", "advised"), [("label", False), ("fine_label", True)])
def test_a_long_label_list_is_advised_out_and_short_prompts_have_none(tmp_path, column, advised):
    from importlib import resources

    from tunelab.data.formatter import format_dataset
    from tunelab.data.prompts import ClassificationPrompt
    from tunelab.data.sources import SourceOptions

    sample = Path(str(resources.files("tunelab") / "resources" / "samples" / "trec_sample.tsv"))
    notes = {}
    for template in ("full", "short"):
        train = tmp_path / f"{template}_train.jsonl"
        options = SourceOptions(label_column=column, prompt=ClassificationPrompt(template=template))
        format_dataset(sample, train, options=options)
        a = analyze_file(train, model="gpt-4o-mini")
        assert a.task["kind"] == "classification"
        notes[template] = " ".join(a.task["notes"])
        if template == "short":
            assert a.task["classification"]["label_list"] is None
    # 6 coarse labels are a small share of each prompt; TREC's 47 fine labels about half.
    assert ("--template short" in notes["full"]) == advised
    assert "label list" not in notes["short"] and "--template" not in notes["short"]


def test_prompts_without_a_label_list_report_none(tmp_path):
    a = analyze_file(CLEAN, model="gpt-4o-mini")
    assert a.task["classification"]["label_list"] is None


def test_analyze_counts_the_tool_definitions_of_each_example(tmp_path):
    from test_tokens import CALLING, WEATHER

    from tunelab.data.tokens import BpeCounter

    plain, with_tools = tmp_path / "plain.jsonl", tmp_path / "tools.jsonl"
    plain.write_bytes(orjson.dumps({"messages": CALLING}) + b"\n")
    with_tools.write_bytes(orjson.dumps({"messages": CALLING, "tools": [WEATHER]}) + b"\n")
    without, counted = (analyze_file(p, model="gpt-4o-mini") for p in (plain, with_tools))

    expected = BpeCounter("o200k_base", "openai").count([CALLING], [[WEATHER]]).total[0]
    assert counted.total_tokens == expected > without.total_tokens
    assert counted.exact_counts is False  # OpenAI's rendering of tools is estimated
