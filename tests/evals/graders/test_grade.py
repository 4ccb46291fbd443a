"""grade(): each grader type on samples whose right scores are known by hand."""

import pytest

from tunelab.errors import TunelabError
from tunelab.evals.candidates import Candidate, answering_from
from tunelab.evals.graders import grade, parse_grader
from tunelab.evals.graders.api import run_grader
from tunelab.types import Answer


def check(operation, text, reference):
    spec = {"type": "string_check", "name": "s", "operation": operation}
    return grade(parse_grader({**spec, "input": text, "reference": reference}), "").score


def test_string_check_operations():
    assert check("eq", "Paris", "Paris") == 1.0 and check("eq", "paris", "Paris") == 0.0
    assert check("ne", "paris", "Paris") == 1.0 and check("ne", "Paris", "Paris") == 0.0
    assert check("like", "It is Paris.", "Paris") == 1.0 and check("like", "paris", "Paris") == 0
    assert check("ilike", "It is PARIS.", "paris") == 1.0 and check("ilike", "Rome", "paris") == 0


def test_templates_read_the_item_and_the_sample_json():
    grader = parse_grader(
        {
            "type": "string_check",
            "name": "city",
            "operation": "eq",
            "input": "{{ sample.output_json.city }}",
            "reference": "{{item.answers[1]}}",
        }
    )
    assert grade(grader, '{"city": "Rome"}', {"answers": ["Paris", "Rome"]}).score == 1.0
    missing = grade(grader, '{"town": "Rome"}', {"answers": ["Paris", "Rome"]})
    assert (missing.score, missing.error) == (0.0, "invalid_variable_error")


def test_text_similarity_and_its_threshold():
    spec = {"type": "text_similarity", "name": "t", "input": "{{sample.output_text}}"}
    grader = parse_grader(
        {**spec, "reference": "a b c d", "evaluation_metric": "rouge_1", "pass_threshold": 0.6}
    )
    result = grade(grader, "a b x y")
    assert result.score == pytest.approx(0.5) and result.passed is False


def test_cosine_is_a_clear_error_without_an_embedding_model():
    grader = parse_grader(
        {"type": "text_similarity", "name": "c", "input": "a", "reference": "b",
         "evaluation_metric": "cosine"}
    )  # fmt: skip
    with pytest.raises(TunelabError) as caught:
        grade(grader, "a")
    assert caught.value.code == "embeddings_unavailable"


MULTI = {
    "type": "multi",
    "name": "both",
    "graders": {
        "exact": {"type": "string_check", "name": "exact", "operation": "eq",
                  "input": "{{sample.output_text}}", "reference": "{{item.answer}}"},
        "close": {"type": "text_similarity", "name": "close", "evaluation_metric": "rouge_1",
                  "input": "{{sample.output_text}}", "reference": "{{item.answer}}"},
    },
    "calculate_output": "0.25 * exact + 0.75 * close",
}  # fmt: skip


def test_multi_combines_named_sub_graders():
    result = grade(parse_grader(MULTI), "new york", {"answer": "new york city"})
    assert result.sub_scores == {"exact": 0.0, "close": pytest.approx(0.8)}
    assert result.score == pytest.approx(0.75 * 0.8)


def test_run_grader_answers_in_openais_shape():
    response = run_grader(MULTI, "new york city", {"answer": "new york city"})
    assert response["reward"] == 1.0
    assert response["sub_rewards"] == {"exact": 1.0, "close": 1.0}
    assert not any(v for k, v in response["metadata"]["errors"].items() if k.endswith("error"))


def test_mongo_query_grader_parse_exact_and_structural():
    def score(metric, answer):
        spec = {"type": "mongo_query", "name": "q", "metric": metric,
                "input": "{{sample.output_text}}", "reference": "{{item.query}}"}  # fmt: skip
        return grade(parse_grader(spec), answer, {"query": "db.users.find({age: 30})"}).score

    assert score("exact", 'db.users.find({"age": 30})') == 1.0
    assert score("exact", "db.users.find({age: 31})") == 0.0
    assert score("structural", "db.users.find({age: 31})") == pytest.approx(6 / 7)
    assert score("parse", "db.orders.find({})") == 1.0
    assert score("parse", "I do not know") == 0.0


def test_label_match_is_strict_about_the_label_and_lenient_about_case():
    spec = {"type": "label_match", "name": "l", "input": "{{sample.output_text}}",
            "reference": "{{item.label}}", "labels": ["HUM", "LOC"]}  # fmt: skip
    grader = parse_grader(spec)
    assert grade(grader, " hum\n", {"label": "HUM"}).score == 1.0
    assert grade(grader, "I think HUM", {"label": "HUM"}).score == 0.0
    assert grade(grader, "LOC", {"label": "HUM"}).score == 0.0


class Judge(Candidate):
    """A stand-in model that answers each chat with a fixed text, and records the chats."""

    def __init__(self, reply: str) -> None:
        self.name, self.reply, self.chats = "judge", reply, []

    def answer(self, conversations, **options):
        self.chats.extend(conversations)
        return [Answer(self.reply) for _ in conversations]


def judged(reply: str, spec: dict):
    judge = Judge(reply)
    with answering_from({"judge": judge}):
        return grade(parse_grader(spec), "Paris", {"question": "capital of France?"}), judge


SCORE = {
    "type": "score_model",
    "name": "judge",
    "model": "judge",
    "range": [0, 10],
    "input": [{"role": "user", "content": "Q: {{item.question}} A: {{sample.output_text}}"}],
}
LABEL = {"type": "label_model", "name": "judge", "model": "judge", "labels": ["good", "bad"],
         "passing_labels": ["good"], "input": SCORE["input"]}  # fmt: skip


def test_score_model_asks_the_model_with_the_rendered_messages():
    result, judge = judged('{"result": 7.5, "steps": []}', SCORE)
    assert result.score == 7.5
    assert judge.chats[0][0]["content"] == "Q: capital of France? A: Paris"
    assert judged("I would give it 6 out of 10", SCORE)[0].score == 6.0
    unreadable = judged("no idea", SCORE)[0]
    assert (unreadable.score, unreadable.error) == (0.0, "model_grader_parse_error")
    assert judged('{"result": 11}', SCORE)[0].error == "model_grader_parse_error"


def test_label_model_passes_on_passing_labels_only():
    assert judged('{"result": "good"}', LABEL)[0].score == 1.0
    assert judged("Bad.", LABEL)[0].score == 0.0
    assert judged("The answer is good.", LABEL)[0].passed is True
    assert judged("good or bad", LABEL)[0].error == "model_grader_parse_error"


def test_a_model_that_cannot_be_named_is_a_server_error_of_the_sample():
    spec = {**SCORE, "model": "together/no-key-set"}
    result = grade(parse_grader(spec), "Paris", {"question": "q"})
    assert result.error == "model_grader_server_error"
