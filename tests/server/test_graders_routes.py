"""The graders routes, driven by the unmodified openai SDK."""

import concurrent.futures
import time

import openai
import pytest

from server.conftest import sdk

CHECK = {"type": "string_check", "name": "city", "operation": "ilike",
         "input": "{{sample.output_text}}", "reference": "{{item.city}}"}  # fmt: skip


def test_run_scores_a_sample_as_openai_does(client):
    response = sdk(client).fine_tuning.alpha.graders.run(
        grader=CHECK, model_sample="It is PARIS.", item={"city": "Paris"}
    )
    assert response.reward == 1.0
    assert response.metadata.name == "city" and response.metadata.type == "string_check"
    assert response.metadata.errors.other_error is False


def test_validate_returns_the_grader_and_refuses_a_bad_one(client):
    graders = sdk(client).fine_tuning.alpha.graders
    assert graders.validate(grader=CHECK).grader.name == "city"
    with pytest.raises(openai.BadRequestError) as caught:
        graders.validate(grader={**CHECK, "operation": "regex"})
    assert "operation" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        graders.run(grader={**CHECK, "type": "multi", "calculate_output": "os.system"},
                    model_sample="x")  # fmt: skip


def test_an_endless_python_grader_is_reported_and_the_server_keeps_answering(client, monkeypatch):
    monkeypatch.setenv("TUNELAB_PYTHON_GRADER_SECONDS", "2")
    source = "def grade(sample, item):\n    while True:\n        pass\n"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            sdk(client).fine_tuning.alpha.graders.run,
            grader={"type": "python", "name": "loop", "source": source},
            model_sample="x",
        )
        time.sleep(0.5)
        assert client.get("/health").status_code == 200
        assert not running.done()  # answered while the grader still looped
        response = running.result()
    assert response.reward == 0.0
    assert response.metadata.errors.unresponsive_reward_error is True
    assert client.get("/health").status_code == 200


def test_an_unknown_field_is_refused_by_name(client):
    grader = {"type": "string_check", "name": "x", "input": "a", "reference": "a"}
    body = {"grader": {**grader, "operation": "eq"}, "extra_field": 1}
    answer = client.post("/v1/fine_tuning/alpha/graders/validate", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "extra_field" in error["message"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", "extra_field")
