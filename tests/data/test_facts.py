"""TaskFacts: what kind of task a chat dataset teaches, from counters kept while streaming."""

from __future__ import annotations

import csv
import json
from importlib import resources

import orjson

from tunelab.data import facts as facts_module
from tunelab.data.facts import TaskFacts

SAMPLES = resources.files("tunelab") / "resources" / "samples"


def pair(user: str, assistant: str, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": assistant})
    return messages


def observed(examples) -> dict:
    facts = TaskFacts()
    for messages in examples:
        facts.observe(messages)
    result = facts.result()
    orjson.dumps(result)  # JSON-ready: analyze prints it with --json
    return result


def docspider_examples() -> list[list[dict]]:
    items = json.loads((SAMPLES / "docspider_sample.json").read_text(encoding="utf-8"))
    return [pair(i["question"], i["query"], "Write a MongoDB query.") for i in items]


def trec_examples() -> list[list[dict]]:
    with (SAMPLES / "trec_sample.tsv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [pair(r["text"], f"<category>{r['label']}</category>") for r in rows]


def test_query_pairs_are_queries_with_their_shape():
    result = observed(docspider_examples())
    assert result["kind"] == "queries"
    q = result["queries"]
    assert q["n_answers"] == q["n_queries"] == 300
    assert q["unreadable_share"] == 0
    by_type = q["by_type"]
    assert by_type["find"] + by_type["aggregate"] == 300
    assert by_type["aggregate"] > by_type["find"] > 0
    assert {"$match", "$group", "$project"} <= set(q["operators"])
    assert list(q["operators"].values()) == sorted(q["operators"].values(), reverse=True)
    lengths = q["pipeline_length"]
    assert lengths["n"] == by_type["aggregate"]
    assert lengths["min"] >= 1 and lengths["max"] >= lengths["mean"] >= lengths["min"]
    assert sum(lengths["counts"].values()) == lengths["n"]
    assert sum(q["depth"]["counts"].values()) == 300
    assert len(q["collections"]) <= facts_module.TOP_N
    assert result["notes"] == []


def test_json_answers_and_unreadable_ones_are_counted():
    examples = [
        pair("q1", '{"$match": {"fiscal_year": "2023"}}'),
        pair("q2", '[{"$match": {"a": 1}}, {"$count": "n"}]'),
        pair("q3", "db.orders.countDocuments({status: 'open'})"),
        pair("q4", "Sorry, I cannot answer that."),
    ]
    result = observed(examples)
    q = result["queries"]
    assert result["kind"] == "queries"
    assert q["by_type"] == {"find": 0, "aggregate": 0, "json": 2, "other": 1}
    assert q["unreadable_share"] == 0.25
    assert q["pipeline_length"]["counts"] == {"2": 1}  # only the JSON array is a pipeline
    assert result["notes"] == ["1 of 4 answers do not read as a query"]


def test_classification_strips_the_wrapper_tag_and_reports_balance():
    result = observed(trec_examples())
    assert result["kind"] == "classification"
    c = result["classification"]
    assert c["wrapper_tag"] == "category"
    assert {e["label"] for e in c["labels"]} == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    counts = [e["count"] for e in c["labels"]]
    assert counts == sorted(counts, reverse=True) and sum(counts) == 600
    assert abs(sum(e["share"] for e in c["labels"]) - 1) < 1e-3
    assert c["majority_baseline_accuracy"] == round(counts[0] / 600, 4)
    assert c["imbalance_ratio"] == round(counts[0] / counts[-1], 3)


def test_rare_labels_are_warned_about():
    examples = [pair(f"text {i}", "spam") for i in range(30)]
    examples += [pair(f"text {i}", "ham") for i in range(12)]
    examples += [pair("odd one", "phishing"), pair("odd two", "phishing")]
    result = observed(examples)
    c = result["classification"]
    assert result["kind"] == "classification"
    assert c["n_labels"] == 3
    assert c["rare_labels"] == ["phishing"]
    assert c["imbalance_ratio"] == 15.0
    assert c["majority_baseline_accuracy"] == round(30 / 44, 4)
    assert any("phishing" in note for note in result["notes"])


def test_many_distinct_answers_are_not_classification():
    result = observed([pair(f"q{i}", f"answer {i}") for i in range(50)])
    assert result["kind"] == "generic"


def test_multi_turn_chats_are_conversations():
    def chat(turns: int, system: str | None) -> list[dict]:
        messages = [{"role": "system", "content": system}] if system else []
        for t in range(turns):
            messages += [
                {"role": "user", "content": f"question {t}"},
                {"role": "assistant", "content": "x" * 10},
            ]
        return messages

    examples = [chat(3, "You are Ada.") for _ in range(6)] + [chat(1, None) for _ in range(2)]
    examples.append(chat(2, "You are Bob."))
    result = observed(examples)
    conv = result["conversations"]
    assert result["kind"] == "conversations"
    assert conv["user_turns"]["counts"] == {"1": 2, "2": 1, "3": 6}
    assert conv["user_turns"]["min"] == 1 and conv["user_turns"]["max"] == 3
    assert conv["assistant_turns"]["mean"] == round(22 / 9, 3)
    assert conv["system_share"] == round(7 / 9, 4)
    assert conv["n_distinct_system_prompts"] == 2
    assert conv["mean_assistant_chars"] == 10.0


def test_single_turn_free_text_is_generic_and_keeps_every_family():
    answers = [f"A long answer number {i}. " * 5 for i in range(20)]
    result = observed([pair("Tell me about it", answer) for answer in answers])
    assert result["kind"] == "generic"
    assert set(result) >= {"queries", "classification", "conversations", "notes"}
    assert result["queries"]["n_queries"] == 0
    assert result["classification"]["n_long_answers"] == 20


def test_tool_calls_names_and_weights_are_tolerated():
    messages = [
        {"role": "user", "content": "weather?", "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny.", "weight": 1},
    ]
    result = observed([messages, []])
    assert result["n_examples"] == 2
    assert result["conversations"]["assistant_turns"]["counts"] == {"0": 1, "2": 1}
    assert result["classification"]["labels"][0]["label"] == "Sunny."


def test_nothing_observed():
    result = TaskFacts().result()
    assert result["kind"] == "generic"
    assert result["n_examples"] == 0
    assert result["classification"]["majority_baseline_accuracy"] is None
    assert result["conversations"]["mean_assistant_chars"] is None


def test_tables_stop_growing_at_the_cap_and_say_so(monkeypatch):
    monkeypatch.setattr(facts_module, "MAX_DISTINCT", 5)
    facts = TaskFacts()
    for i in range(40):
        facts.observe(pair("q", f"db.coll{i}.find({{f{i}: {{$op{i}: 1}}}})", f"system {i}"))
    assert len(facts.collections.counts) == len(facts.operators.counts) == 5
    assert len(facts.system_prompts.counts) == len(facts.labels.counts) == 5
    result = facts.result()
    assert result["kind"] == "queries"
    assert set(result["queries"]["capped"]) == {"collections", "operators"}
    assert result["conversations"]["system_prompts_capped"] is True
    assert result["classification"]["labels_capped"] is True
    assert any("distinct collections" in note for note in result["notes"])
    assert result["queries"]["n_distinct_collections"] == 5


def test_capped_labels_are_not_classification(monkeypatch):
    monkeypatch.setattr(facts_module, "MAX_DISTINCT", 3)
    result = observed([pair("q", label) for label in "abcdef" for _ in range(10)])
    assert result["kind"] == "generic"


def test_memory_does_not_hold_texts():
    facts = TaskFacts()
    long_prompt = "system " * 1000
    for i in range(200):
        facts.observe(pair("x" * 5000, "y" * 5000 + str(i), long_prompt + str(i)))
    # Answers over the label length are counted, never stored; prompts are kept as hashes.
    assert facts.labels.counts == {}
    assert all(isinstance(key, int) for key in facts.system_prompts.counts)
