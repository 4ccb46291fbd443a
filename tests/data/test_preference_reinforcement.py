"""Preference (dpo) and reinforcement files: detection, every finding code with its line, the
loaders the trainer uses, token counts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tunelab.catalog import resolve_model
from tunelab.data.method_scan import MethodOptions, scan_method_file, validate_data_file
from tunelab.data.methods import detect_method, resolve_method
from tunelab.data.preference import read_preference_file
from tunelab.data.reinforcement import grader_item_fields, read_reinforcement_file
from tunelab.data.tokens import load_counter
from tunelab.data.validate import METHOD_SEVERITY
from tunelab.errors import TunelabError

USER = {"role": "user", "content": "Which category is 'Who wrote Hamlet?'"}
GOOD = [{"role": "assistant", "content": "<category>HUM</category>"}]
BAD = [{"role": "assistant", "content": "<category>LOC</category>"}]
PAIR = {"input": {"messages": [USER]}, "preferred_output": GOOD, "non_preferred_output": BAD}
ITEM = {"messages": [USER], "reference_answer": "<category>HUM</category>"}


def write(path: Path, records: list) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


# code -> (method, records, the 1-based line of the finding)
CASES = {
    "missing_input": ("dpo", [PAIR, {k: v for k, v in PAIR.items() if k != "input"}], 2),
    "invalid_input": ("dpo", [{**PAIR, "input": {"messages": []}}], 1),
    "missing_output": ("dpo", [{"input": PAIR["input"], "preferred_output": GOOD}], 1),
    "invalid_output": ("dpo", [PAIR, {**PAIR, "non_preferred_output": [USER]}], 2),
    "identical_outputs": ("dpo", [PAIR, {**PAIR, "non_preferred_output": GOOD}], 2),
    "wrong_last_role": ("reinforcement", [ITEM, {**ITEM, "messages": [USER, *GOOD]}], 2),
    "invalid_tools": ("dpo", [{**PAIR, "input": {"messages": [USER], "tools": "search"}}], 1),
    "missing_item_field": ("reinforcement", [ITEM, {"messages": [USER]}], 2),
}


def test_every_method_code_has_a_case():
    assert set(CASES) == set(METHOD_SEVERITY)


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_defect_is_found_with_its_line(code, tmp_path):
    method, records, expected = CASES[code]
    path = write(tmp_path / "train.jsonl", records)
    report = validate_data_file(path, method=method, grader_fields=["reference_answer"])
    found = [f for f in report.findings if f.code == code]
    assert found, f"{code} not in {report.findings}"
    assert found[0].line == expected and not report.ok
    assert report.to_dict()["method"] == method


def test_shared_codes_apply_too(tmp_path):
    special = {**PAIR, "preferred_output": [{"role": "assistant", "content": "<|im_end|>"}]}
    lines = [PAIR, PAIR, special]
    path = write(tmp_path / "train.jsonl", lines)
    with path.open("ab") as handle:
        handle.write(b"{not json\n")
    report = validate_data_file(path, method="dpo")
    assert [(f.code, f.line) for f in report.findings] == [
        ("duplicate_example", 2),
        ("special_token", 3),
        ("invalid_json", 4),
    ]


def test_a_wrong_last_role_in_a_preference_prompt(tmp_path):
    pair = {**PAIR, "input": {"messages": [USER, *GOOD]}}
    report = validate_data_file(write(tmp_path / "p.jsonl", [pair]), method="dpo")
    assert [f.code for f in report.findings] == ["wrong_last_role"]


def test_clean_files_are_clean_and_detected(tmp_path):
    pairs = write(tmp_path / "pairs.jsonl", [PAIR])
    items = write(tmp_path / "items.jsonl", [ITEM])
    for path, method in ((pairs, "dpo"), (items, "reinforcement")):
        report = validate_data_file(path, grader_fields=["reference_answer"])
        assert report.ok and report.findings == []
        assert report.method == method and report.method_detection


def test_detection_asks_for_method_on_a_mix(tmp_path):
    chat = {"messages": [USER, *GOOD]}
    assert detect_method(write(tmp_path / "chat.jsonl", [chat])).method == "supervised"
    # a prompt without answer nor item fields is chat data missing its answer
    bare = write(tmp_path / "bare.jsonl", [{"messages": [USER]}])
    assert detect_method(bare).method == "supervised"
    mixed = write(tmp_path / "mixed.jsonl", [chat, ITEM])
    with pytest.raises(TunelabError) as err:
        detect_method(mixed)
    assert err.value.code == "ambiguous_method" and "--training-method" in err.value.hint
    assert resolve_method(mixed, "reinforcement").method == "reinforcement"
    with pytest.raises(TunelabError, match="unknown method"):
        resolve_method(mixed, "ppo")


def test_the_validation_file_is_checked_against_training(tmp_path):
    train = write(tmp_path / "train.jsonl", [PAIR])
    val = write(tmp_path / "val.jsonl", [PAIR])
    report = validate_data_file(train, val_path=val, method="dpo")
    assert [(f.code, f.file) for f in report.findings] == [("in_both_files", str(val))]


def test_loaders_return_typed_examples(tmp_path):
    [pair] = read_preference_file(write(tmp_path / "pairs.jsonl", [PAIR]))
    assert pair.messages == (USER,) and pair.preferred == tuple(GOOD)
    assert pair.non_preferred == tuple(BAD) and pair.source_line == 1
    assert orjson.loads(pair.to_json_line()) == PAIR
    [item] = read_reinforcement_file(write(tmp_path / "items.jsonl", [ITEM]))
    assert item.messages == (USER,) and item.fields == {"reference_answer": GOOD[0]["content"]}
    assert orjson.loads(item.to_json_line()) == ITEM


@pytest.mark.parametrize(
    ("reader", "records", "code", "line"),
    [
        (
            read_preference_file,
            [PAIR, {**PAIR, "non_preferred_output": GOOD}],
            "identical_outputs",
            2,
        ),
        (read_reinforcement_file, [ITEM, ITEM, {"messages": [*GOOD]}], "wrong_last_role", 3),
        (read_preference_file, [], "empty_file", None),
    ],
)
def test_loaders_raise_with_file_and_line(tmp_path, reader, records, code, line):
    path = write(tmp_path / "data.jsonl", records)
    with pytest.raises(TunelabError) as err:
        reader(path)
    assert (err.value.code, err.value.line, err.value.path) == (code, line, str(path))


def test_the_reinforcement_loader_requires_the_grader_fields(tmp_path):
    path = write(tmp_path / "items.jsonl", [ITEM, {"messages": [USER]}])
    assert len(read_reinforcement_file(path)) == 2
    with pytest.raises(TunelabError) as err:
        read_reinforcement_file(path, required_fields=["reference_answer"])
    assert (err.value.code, err.value.line) == ("missing_item_field", 2)


def test_grader_fields_are_found_in_a_grader_definition():
    grader = {
        "type": "multi",
        "graders": {
            "exact": {
                "type": "string_check",
                "input": "{{sample.output_text}}",
                "reference": "{{ item.reference_answer }}",
                "operation": "eq",
            },
            "label": {"type": "text_similarity", "reference": "{{item.label}}"},
        },
        "calculate_output": "exact",
    }
    assert grader_item_fields(grader) == ("reference_answer", "label")


def test_tokens_count_both_answers_or_the_answer_budget(tmp_path):
    counter = load_counter(resolve_model("gpt-4o-mini"))
    chat = counter.count([[USER, *GOOD], [USER, *BAD]])
    pairs = write(tmp_path / "pairs.jsonl", [PAIR])
    scan = scan_method_file(pairs, MethodOptions("dpo"), counter=counter)
    assert scan.tokens.tolist() == [int(chat.total[0] + chat.assistant[1])]
    assert scan.assistant_tokens.tolist() == [int(chat.assistant[0] + chat.assistant[1])]
    items = write(tmp_path / "items.jsonl", [ITEM])
    options = MethodOptions("reinforcement", max_answer_tokens=100)
    scan = scan_method_file(items, options, counter=counter)
    prompt = counter.count([[USER]])
    assert scan.tokens.tolist() == [int(prompt.total[0]) + 100]
    assert scan.assistant_tokens.tolist() == [100]


def test_analysis_of_a_preference_file_prices_both_answers(tmp_path):
    from tunelab.data.analyze import analyze_file

    second = {**PAIR, "input": {"messages": [{**USER, "content": "Where is Paris?"}]}}
    path = write(tmp_path / "pairs.jsonl", [PAIR, second])
    analysis = analyze_file(path, model="gpt-4o-mini")
    assert analysis.method == "dpo" and analysis.n_examples == 2
    assert analysis.billed_tokens == analysis.total_tokens * analysis.n_epochs
    assert analysis.estimated_cost_usd == round(analysis.billed_tokens / 1e6 * 3.0, 6)
    assert analysis.total_assistant_tokens < analysis.total_tokens


def test_analysis_of_reinforcement_items_counts_the_answer_budget(tmp_path):
    from tunelab.data.analyze import analyze_file

    path = write(tmp_path / "items.jsonl", [ITEM])
    analysis = analyze_file(path, model="gpt-4o-mini", max_answer_tokens=64)
    assert analysis.method == "reinforcement" and analysis.total_assistant_tokens == 64
    assert analysis.estimated_cost_usd is None and analysis.costs == []
    assert any("billed by training time" in note for note in analysis.notes)


def test_format_to_reinforcement_keeps_the_answer_as_the_reference(tmp_path):
    from tunelab.data.formatter import format_dataset

    table = tmp_path / "questions.tsv"
    rows = [f"Who wrote book {i}?\tHUM" for i in range(4)] + [
        f"Where is {i}?\tLOC" for i in range(4)
    ]
    table.write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    report = format_dataset(table, tmp_path / "train.jsonl", to="reinforcement", train_ratio=0.5)
    assert (report.to, report.n_train, report.n_val) == ("reinforcement", 4, 4)
    items = read_reinforcement_file(tmp_path / "train.jsonl", ["reference_answer", "label"])
    for item in items:
        assert item.messages[-1]["role"] == "user"
        assert item.fields["reference_answer"] == f"<category>{item.fields['label']}</category>"
    assert detect_method(tmp_path / "val.jsonl").method == "reinforcement"
