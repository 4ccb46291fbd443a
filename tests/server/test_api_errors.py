"""One error shape across the API: every 400 carries a stable code, and `param` names the
field by its whole path as OpenAI writes it (`messages[1].content[0].text`), whichever route
and whichever check refused it. Driven by the unmodified `openai` SDK where it can send the
request; no model is loaded (every refusal comes before one would be)."""

from __future__ import annotations

import openai
import pytest

from server.conftest import sdk
from tunelab.server.errors import param_path, validation_code

HI = {"role": "user", "content": "Hi"}
ROLE = "messages[1].role"
SERVED = "smollm2-135m-instruct"  # a bundled name: served, never loaded by these requests


def refused_chat(client, **fields) -> openai.BadRequestError:
    body = {"model": "any-model", "messages": [HI], **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(client).chat.completions.create(
            model=body.pop("model"), messages=body.pop("messages"), extra_body=body
        )
    return caught.value


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"messages": [HI, {"role": "robot", "content": "x"}]}, "invalid_value", ROLE),
        ({"messages": [HI, {"content": "no role"}]}, "missing_required_parameter", ROLE),
        ({"messages": [{"role": "user", "content": 5}]}, "invalid_type", "messages[0].content"),
        ({"temperature": "hot"}, "invalid_type", "temperature"),
        ({"temperature": 3}, "invalid_value", "temperature"),
        ({"stop": ["ok", ""]}, "invalid_value", "stop[1]"),
        ({"tool_choice": "sometimes"}, "invalid_value", "tool_choice"),
        (
            {"tool_choice": {"type": "function", "function": {}}},
            "missing_required_parameter",
            "tool_choice.function.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "missing_required_parameter",
            "response_format.json_schema.schema",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]},
            "invalid_type",
            "messages[0].content[0].text",
        ),
    ],
)  # fmt: skip
def test_a_value_the_schema_refuses_is_named_by_its_bracket_path(client, fields, code, param):
    error = refused_chat(client, **fields)
    assert (error.code, error.param) == (code, param)
    assert error.body["type"] == "invalid_request_error"
    assert param in error.message


def test_the_first_field_at_fault_is_named_when_several_are(client):
    parts = [{"type": "text", "text": 7}]
    messages = [{"role": "robot", "content": "x"}, {"role": "user", "content": parts}]
    error = refused_chat(client, messages=messages)
    assert (error.code, error.param) == ("invalid_value", "messages[0].role")
    assert "messages[1].content[0].text" in error.message  # every problem is listed


@pytest.mark.parametrize(
    ("part", "role", "param"),
    [
        ({"type": "text"}, "user", "messages[1].content[0].text"),
        ({"type": "refusal"}, "assistant", "messages[1].content[0].refusal"),
    ],
)
def test_a_content_part_without_its_text_is_a_missing_parameter(client, part, role, param):
    error = refused_chat(client, messages=[HI, {"role": role, "content": [part]}])
    assert (error.code, error.param) == ("missing_required_parameter", param)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_values_that_conflict_with_the_rest_of_the_request_are_invalid_values(
    client, fields, param
):
    error = refused_chat(client, **fields)
    assert (error.code, error.param) == ("invalid_value", param)


def test_a_json_schema_format_without_its_schema_is_a_missing_parameter(client):
    error = refused_chat(client, model=SERVED, response_format={"type": "json_schema"})
    assert (error.code, error.param) == (
        "missing_required_parameter",
        "response_format.json_schema",
    )


def test_unknown_job_fields_are_unsupported_parameters_named_as_chat_names_them(client):
    jobs = sdk(client).fine_tuning.jobs
    with pytest.raises(openai.BadRequestError) as caught:
        jobs.create(model="m", training_file="f", extra_body={"frobnicate": 1})
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "frobnicate")
    method = {"type": "dpo", "dpo": {"hyperparameters": {}, "beta": 0.1}}
    with pytest.raises(openai.BadRequestError) as caught:
        jobs.create(model="m", training_file="f", method=method)
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "method.dpo.beta")
    assert "Unsupported parameter: `method.dpo.beta`" in caught.value.message


def test_a_job_method_local_jobs_do_not_run_is_an_unsupported_value(client):
    response = client.post(
        "/v1/fine_tuning/jobs",
        json={"model": SERVED, "training_file": "f", "method": {"type": "x"}},
    )
    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["code"], error["param"]) == ("unsupported_value", "method.type")


def test_unknown_grader_route_fields_are_unsupported_parameters(client):
    grader = {"type": "string_check", "name": "g", "operation": "eq",
              "input": "{{sample.output_text}}", "reference": "x"}  # fmt: skip
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(client).fine_tuning.alpha.graders.validate(grader=grader, extra_body={"strict": 1})
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "strict")


def test_a_bad_query_parameter_is_named_with_the_same_codes(client):
    response = client.get("/v1/fine_tuning/jobs", params={"limit": "many"})
    error = response.json()["error"]
    assert response.status_code == 400
    assert (error["code"], error["param"]) == ("invalid_type", "limit")


def test_a_body_that_is_no_json_has_its_own_code(client):
    response = client.post(
        "/v1/chat/completions", content="{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "invalid_json",
        None,
    )


def test_an_upload_without_its_file_or_purpose_names_the_field(client):
    no_file = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"x": ("a", b"")})
    assert (no_file.json()["error"]["code"], no_file.json()["error"]["param"]) == (
        "missing_required_parameter",
        "file",
    )
    files = {"file": ("train.jsonl", b"{}\n")}
    bad_purpose = client.post("/v1/files", data={"purpose": "fun"}, files=files)
    assert (bad_purpose.json()["error"]["code"], bad_purpose.json()["error"]["param"]) == (
        "invalid_value",
        "purpose",
    )


def test_paths_are_written_as_openai_writes_them():
    assert param_path(["messages", 1, "content", 0, "image_url"]) == (
        "messages[1].content[0].image_url"
    )
    assert param_path(["stop", 2]) == "stop[2]"
    assert param_path([]) is None


@pytest.mark.parametrize(
    ("problem", "code"),
    [
        ("missing", "missing_required_parameter"),
        ("extra_forbidden", "unsupported_parameter"),
        ("string_type", "invalid_type"),
        ("int_parsing", "invalid_type"),
        ("literal_error", "invalid_value"),
        ("greater_than_equal", "invalid_value"),
        ("too_long", "invalid_value"),
        ("value_error", "invalid_value"),
    ],
)
def test_each_kind_of_schema_problem_gets_openais_code(problem, code):
    assert validation_code(problem) == code
