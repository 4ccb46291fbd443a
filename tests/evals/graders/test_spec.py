"""parse_grader: OpenAI's shapes accepted, every problem reported at once."""

import pytest

from tunelab.errors import TunelabError
from tunelab.evals.graders import parse_grader
from tunelab.evals.graders.spec import Multi, StringCheck


def problems(spec) -> str:
    with pytest.raises(TunelabError) as caught:
        parse_grader(spec)
    assert caught.value.code == "grader_invalid"
    return caught.value.message


def test_every_problem_is_named_at_once():
    message = problems({"type": "string_check", "name": "", "operation": "equals", "input": 3})
    assert "grader.name" in message and "grader.operation" in message
    assert "grader.input" in message and "grader.reference" in message


def test_unknown_types_and_bad_label_sets_are_refused():
    assert "grader.type" in problems({"type": "regex"})
    label = {"type": "label_model", "name": "l", "model": "m", "labels": ["a"],
             "passing_labels": ["b"], "input": [{"role": "user", "content": "x"}]}  # fmt: skip
    assert "subset" in problems(label)
    assert "range" in problems({**label, "type": "score_model", "range": [1, 0]})
    image = {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}
    assert "input_image" in problems({**label, "input": [image]})


def test_python_source_is_compiled_not_run():
    spec = {"type": "python", "name": "p"}
    assert "compile" in problems({**spec, "source": "def grade(:"})
    assert "grade(sample, item)" in problems({**spec, "source": "x = 1"})
    parse_grader({**spec, "source": "raise SystemExit\ndef grade(s, i):\n    return 1"})


def test_multi_takes_named_graders_or_the_sdks_single_grader():
    check = {"type": "string_check", "name": "c", "operation": "eq", "input": "a",
             "reference": "a"}  # fmt: skip
    multi = parse_grader({"type": "multi", "name": "m", "graders": {"x": check},
                          "calculate_output": "x * 2"})  # fmt: skip
    assert isinstance(multi, Multi) and isinstance(multi.graders["x"], StringCheck)
    single = parse_grader({"type": "multi", "name": "m", "graders": check,
                           "calculate_output": "c"})  # fmt: skip
    assert set(single.graders) == {"c"}
    assert "names no sub-grader: y" in problems(
        {"type": "multi", "name": "m", "graders": {"x": check}, "calculate_output": "x + y"}
    )
    assert "calculate_output" in problems(
        {"type": "multi", "name": "m", "graders": {"x": check}, "calculate_output": "x +"}
    )
