"""validate_file: one small file per finding code, a clean file, line numbers, the fast path."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.data import validate
from tunelab.data.validate import SEVERITY, check_record, fast_messages, validate_file

FIXTURES = Path(__file__).parent.parent / "fixtures" / "validate"
USER = {"role": "user", "content": "How many heads are older than 56?"}
ANSWER = {"role": "assistant", "content": "db.head.countDocuments({age: {$gt: 56}})"}
OK = {"messages": [USER, ANSWER]}
STRICT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('no system messages') }}{% endif %}"
    "{{ message['role'] + ': ' + message['content'] + '<|im_end|>' }}{% endfor %}"
)


def line(record) -> bytes:
    return orjson.dumps(record)


def example(*messages, **extra) -> bytes:
    return line({"messages": list(messages), **extra})


def write(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    path.write_bytes(b"".join(item + end for item in lines))
    return path


REPEATED_CONTENT = (
    b'{"messages": [{"role": "user", "content": "a", "content": "b"}, '
    b'{"role": "assistant", "content": "c"}]}'
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def tool_example(name: str = "weather", arguments: str = '{"city": "Paris"}', answers="c1"):
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
    return example(
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": answers, "content": "18 degrees"},
        {"role": "assistant", "content": "Eighteen degrees."},
        tools=[WEATHER_TOOL],
    )


# code -> (lines of the file, the 1-based line of the finding or None for the file)
CASES = {
    "empty_file": ([], None),
    "bom": ([b"\xef\xbb\xbf" + line(OK)], 1),
    "not_utf8": ([line(OK), b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'], 2),
    "blank_line": ([line(OK), b"   ", example(USER, {**ANSWER, "content": "x"})], 2),
    "invalid_json": ([line(OK), b'{"messages": [{"role": "user"'], 2),
    "not_an_object": ([b"[1, 2]"], 1),
    "missing_messages": ([line(OK), line({"prompt": "x", "completion": "y"})], 2),
    "messages_not_a_list": ([line({"messages": "hello"})], 1),
    "empty_messages": ([line({"messages": []})], 1),
    "message_not_an_object": ([example("hello", ANSWER)], 1),
    "missing_role": ([example({"content": "hi"}, ANSWER)], 1),
    "unrecognized_role": ([example({"role": "bot", "content": "hi"}, ANSWER)], 1),
    "missing_content": ([example({"role": "user", "content": None}, ANSWER)], 1),
    "content_parts": ([example({"role": "user", "content": [{"type": "text"}]}, ANSWER)], 1),
    "content_not_string": ([example({"role": "user", "content": 42}, ANSWER)], 1),
    "empty_content": ([example({"role": "user", "content": "  "}, ANSWER)], 1),
    "unrecognized_message_key": ([example({**USER, "lang": "en"}, ANSWER)], 1),
    "unrecognized_key": ([example(USER, ANSWER, metadata={"id": 1})], 1),
    "invalid_name": ([example({**USER, "name": 7}, ANSWER)], 1),
    "invalid_tool_calls": ([example({**USER, "tool_calls": [{}]}, ANSWER)], 1),
    "unknown_tool": ([tool_example(), tool_example(name="forecast")], 2),
    "invalid_tool_arguments": ([tool_example(), tool_example(arguments='{"town": "Paris"}')], 2),
    "unmatched_tool_result": ([tool_example(answers="c9")], 1),
    "no_assistant_message": ([example(USER)], 1),
    "consecutive_same_role": ([example(USER, USER, ANSWER)], 1),
    "invalid_weight": ([example(USER, {**ANSWER, "weight": 0.5})], 1),
    "weight_on_non_assistant": ([example({**USER, "weight": 1}, ANSWER)], 1),
    "special_token": ([line(OK), example(USER, {**ANSWER, "content": "done<|endoftext|>"})], 2),
    "duplicate_example": ([line(OK), example(ANSWER, USER, ANSWER), line(OK)], 3),
    "too_long": ([line(OK), example(USER, {**ANSWER, "content": "a " * 200})], 2),
    "too_few_examples": ([line(OK)], None),
    "in_both_files": ([line(OK)], 1),
    "template_error": ([example({"role": "system", "content": "Be brief."}, USER, ANSWER)], 1),
    "duplicate_key": ([line(OK), REPEATED_CONTENT], 2),
    "line_too_long": ([line(OK), example(USER, {**ANSWER, "content": "x" * (5 << 20)})], 2),
}
MODEL_FOR = {"too_few_examples": "gpt-4o-mini"}
# Local tokenizers built per test: a 150-token context, and a template that rejects systems.
TEMPLATE_FOR = {"too_long": None, "template_error": STRICT_TEMPLATE}


def test_every_code_has_a_case():
    assert set(CASES) == set(SEVERITY)


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_defect_is_found_with_its_line(code, tmp_path):
    lines, expected_line = CASES[code]
    path = write(tmp_path / "train.jsonl", lines)
    kwargs = {"model": MODEL_FOR.get(code)}
    if code == "in_both_files":
        kwargs["val_path"] = write(tmp_path / "val.jsonl", lines)
    if code in TEMPLATE_FOR:
        from test_tokens import CHATML_TEMPLATE, build_tokenizer

        template = TEMPLATE_FOR[code] or CHATML_TEMPLATE
        build_tokenizer(tmp_path / "tok", template=template, max_length=150)
        kwargs["model"] = str(tmp_path / "tok")
    report = validate_file(path, **kwargs)
    found = [f for f in report.findings if f.code == code]
    assert found, f"{code} not found in {report.findings}"
    assert found[0].line == expected_line
    assert found[0].severity == SEVERITY[code]
    assert report.ok == (SEVERITY[code] == "warning")


def test_a_clean_file_has_no_findings():
    report = validate_file(FIXTURES / "clean.jsonl", model="gpt-4o-mini")
    assert report.findings == [] and report.ok
    assert (report.n_examples, report.train.n_valid) == (12, 12)


def test_a_clean_file_is_clean_for_a_local_model_too(tmp_path):
    from test_tokens import build_tokenizer

    build_tokenizer(tmp_path / "tok", max_length=4096)
    report = validate_file(FIXTURES / "clean.jsonl", model=str(tmp_path / "tok"))
    assert report.findings == []


def test_line_numbers_count_every_line_with_crlf_endings(tmp_path):
    lines = [line(OK), b"", example(USER, {**ANSWER, "content": "b"}), b"", example(USER)]
    report = validate_file(write(tmp_path / "crlf.jsonl", lines, end=b"\r\n"))
    assert [(f.code, f.line) for f in report.findings] == [
        ("blank_line", 2),
        ("blank_line", 4),
        ("no_assistant_message", 5),
    ]
    assert (report.n_examples, report.train.n_valid) == (3, 2)


def test_every_defect_of_an_example_is_reported(tmp_path):
    bad = example({"role": "bot", "content": 3, "x": 1}, {"role": "user", "weight": 1})
    report = validate_file(write(tmp_path / "bad.jsonl", [bad]))
    assert set(report.counts) == {
        "unrecognized_role",
        "content_not_string",
        "unrecognized_message_key",
        "missing_content",
        "weight_on_non_assistant",
        "no_assistant_message",
    }


def test_special_tokens_are_found_when_json_escapes_them(tmp_path):
    escaped = b'{"messages": [{"role": "user", "content": "a \\u003c|im_start|> b"}, '
    escaped += line(ANSWER) + b"]}"
    report = validate_file(write(tmp_path / "escaped.jsonl", [escaped]))
    assert [(f.code, f.line) for f in report.findings] == [("special_token", 1)]


def test_the_target_tokenizer_adds_its_own_special_tokens(tmp_path):
    special = example(USER, {**ANSWER, "content": "ok<|eot_id|>"})
    path = write(tmp_path / "t.jsonl", [line(OK), special])
    assert validate_file(path).ok
    report = validate_file(path, model="llama-3.1-8b-instruct")
    assert [f.code for f in report.findings] == ["special_token"]


def test_duplicates_name_the_first_line_and_val_overlap_is_an_error(tmp_path):
    other = example(USER, {**ANSWER, "content": "other"})
    train = write(tmp_path / "train.jsonl", [line(OK), other, line(OK), line(OK)])
    # same example, other key order and spacing
    reordered = b'{"messages": [{"content": "%s", "role": "user"}, %s]}' % (
        USER["content"].encode(),
        line(ANSWER),
    )
    val = write(tmp_path / "val.jsonl", [example(USER, {**ANSWER, "content": "new"}), reordered])
    report = validate_file(train, val_path=val)
    found = [(f.code, f.line, f.file, f.message) for f in report.findings]
    assert found == [
        ("duplicate_example", 3, None, "duplicate of the example on line 1"),
        ("duplicate_example", 4, None, "duplicate of the example on line 1"),
        ("in_both_files", 2, str(val), "also in the training file (line 1)"),
    ]
    assert not report.ok


def test_findings_are_capped_but_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "MAX_FINDINGS", 5)
    report = validate_file(write(tmp_path / "blank.jsonl", [line(OK)] + [b""] * 8))
    assert len(report.findings) == 5 and report.n_omitted == 3
    assert report.counts["blank_line"] == 8
    assert report.to_dict()["n_findings_omitted"] == 3


def test_report_as_json(tmp_path):
    path = write(tmp_path / "t.jsonl", [line(OK), b"", line(OK)])
    data = json.loads(json.dumps(validate_file(path, model="gpt-4o-mini").to_dict()))
    assert data["ok"] is False
    assert (data["n_errors"], data["n_warnings"]) == (2, 1)
    assert data["by_code"] == {"blank_line": 1, "duplicate_example": 1, "too_few_examples": 1}
    assert data["findings"][0] == {
        "code": "too_few_examples",
        "severity": "error",
        "line": None,
        "message": "2 valid examples; openai needs at least 10 to fine-tune gpt-4o-mini-2024-07-18",
        "file": None,
    }
    assert (data["model"], data["n_examples"], data["n_valid_examples"]) == (
        "gpt-4o-mini-2024-07-18",
        2,
        2,
    )


# ----- the fast path never hides a defect ---------------------------------------------------

roles = st.sampled_from(["system", "user", "assistant", "tool", "bot", None, 3])
contents = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["<|im_end|>", "ok <|endoftext|>", " ", ""]),
    st.none(),
    st.integers(-1000, 1000),
    st.lists(st.text(max_size=3), max_size=2),
)
messages = st.fixed_dictionaries(
    {},
    optional={
        "role": roles,
        "content": contents,
        "weight": st.sampled_from([0, 1, 2, True]),
        "name": st.one_of(st.text(max_size=4), st.integers(-9, 9)),
        "extra": st.just(1),
    },
)
records = st.one_of(
    st.fixed_dictionaries(
        {"messages": st.lists(messages, max_size=4)}, optional={"metadata": st.just({})}
    ),
    st.fixed_dictionaries(
        {"messages": st.lists(st.fixed_dictionaries({"role": roles, "content": contents}))}
    ),
    st.lists(st.integers(-9, 9), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(records)
def test_what_the_fast_path_accepts_has_no_findings(record):
    if fast_messages(record) is not None and b"<|" not in orjson.dumps(record):
        assert check_record(record) == []


@settings(max_examples=25, deadline=None)
@given(st.lists(records, min_size=1, max_size=8))
def test_the_scan_reports_exactly_what_the_detailed_checks_find(tmp_path_factory, batch):
    path = tmp_path_factory.mktemp("scan") / "data.jsonl"
    write(path, [line(record) for record in batch])
    report = validate_file(path)
    per_line = {
        number: {code for code, _ in check_record(record)} for number, record in enumerate(batch, 1)
    }
    for number, codes in per_line.items():
        found = {f.code for f in report.findings if f.line == number}
        assert found - {"duplicate_example"} == codes
    n_valid = sum(all(SEVERITY[c] == "warning" for c in codes) for codes in per_line.values())
    assert report.train.n_valid == n_valid


def test_a_truncated_line_is_reported_where_it_stops(tmp_path):
    truncated = b'{"messages": [{"role": "user", "content": "hi"}'
    report = validate_file(write(tmp_path / "train.jsonl", [line(OK), truncated]))
    [finding] = [f for f in report.findings if f.code == "invalid_json"]
    assert finding.line == 2 and f"column {len(truncated) + 1}" in finding.message


def test_a_plain_example_with_a_repeated_key_is_warned_about(tmp_path):
    repeated = (
        b'{"messages": [{"role": "user", "content": "hi"}, '
        b'{"role": "assistant", "role": "assistant", "content": "ok"}]}'
    )
    clean = line({"messages": [{"role": "user", "content": "role"}, ANSWER]})
    report = validate_file(write(tmp_path / "train.jsonl", [repeated, clean]))
    assert [(f.code, f.line) for f in report.findings if f.code == "duplicate_key"] == [
        ("duplicate_key", 1)
    ]
    assert report.ok  # a warning: the example is still used


def test_an_enormous_line_is_read_past_without_holding_it(tmp_path):
    import tracemalloc

    from tunelab.data.jsonl import iter_bounded_lines

    path = write(tmp_path / "train.jsonl", [line(OK), b"x" * (40 << 20), line(OK)])
    tracemalloc.start()
    with path.open("rb") as handle:
        seen = [
            (number, raw is None, length)
            for number, raw, length in iter_bounded_lines(handle, validate.MAX_LINE_BYTES)
        ]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen[1] == (2, True, (40 << 20) + 1) and seen[2][:2] == (3, False)
    assert peak < 3 * validate.MAX_LINE_BYTES  # never the 40 MB line


# ----- tool calls against the declared tools ------------------------------------------------


def test_a_tool_calling_example_that_keeps_to_its_tools_is_clean():
    assert check_record(orjson.loads(tool_example())) == []


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ('{"city": 7}', "arguments.city is a number, not string"),
        ("{not json", "not valid JSON"),
        ("[1]", "not a JSON object"),
        ("{}", "lacks the required 'city'"),
    ],
)
def test_arguments_are_checked_against_the_tool_schema(arguments, problem):
    [(code, message)] = check_record(orjson.loads(tool_example(arguments=arguments)))
    assert code == "invalid_tool_arguments" and problem in message


def test_tools_that_are_not_function_definitions_are_an_error():
    record = orjson.loads(tool_example())
    record["tools"] = [{"type": "function", "function": {"description": "no name"}}]
    assert [code for code, _ in check_record(record)] == ["invalid_tools"]
