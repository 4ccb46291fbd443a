"""`tunelab eval tools`: calls scored on the right function, valid and equal arguments."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import orjson
import pytest

from tiny import build_tokenizer
from tunelab.cli import main
from tunelab.evals import candidates, runs  # noqa: F401  (imported before patching)
from tunelab.evals.candidates import Answer, Candidate
from tunelab.evals.tools import ToolItem, load_tool_items, score_calls
from tunelab.providers.local import answering
from tunelab.types import ToolCall

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME = {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}}
CITIES = ["Paris", "Rome", "Oslo", "Lima"]


def example(city: str) -> dict:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "weather", "arguments": json.dumps({"city": city, "unit": "C"})},
    }
    return {
        "messages": [
            {"role": "user", "content": f"Weather in {city}, in Celsius?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
        "tools": [WEATHER, TIME],
    }


def calling(name: str, arguments: dict | str) -> Answer:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Answer("", "tool_calls", tool_calls=(ToolCall("c", name, text),))


ITEM = ToolItem(
    example("Paris")["messages"][:1],
    [WEATHER, TIME],
    [("weather", {"city": "Paris", "unit": "C"})],
    1,
)


@pytest.mark.parametrize(
    ("answer", "steps"),
    [
        (calling("weather", {"unit": "C", "city": "Paris"}), (True, True, True)),
        (calling("weather", {"city": "Paris"}), (True, True, False)),
        (calling("weather", {"town": "Paris"}), (True, False, False)),
        (calling("weather", "{not json"), (True, False, False)),
        (calling("time", {}), (False, True, False)),
        (calling("forecast", {"city": "Paris", "unit": "C"}), (False, False, False)),
        (Answer("It is sunny."), (False, False, False)),
    ],
)
def test_each_step_of_a_call_is_scored(answer, steps):
    row = score_calls(ITEM, answer)
    assert (row["function_match"], row["arguments_valid"], row["exact"]) == steps


def test_only_examples_ending_with_calls_are_items(tmp_path):
    answered = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    }
    path = tmp_path / "tools.jsonl"
    path.write_bytes(
        b"\n".join(orjson.dumps(r) for r in (example("Paris"), answered, example("Rome")))
    )
    data = load_tool_items(path)
    assert [item.source_line for item in data.items] == [1, 3]
    assert data.describe()["n_skipped"] == 1
    assert data.items[0].reference == [("weather", {"city": "Paris", "unit": "C"})]


class Scripted(Candidate):
    """Calls the weather tool for each question, right or (`wrong`) with Fahrenheit."""

    def __init__(self, name: str, wrong: bool) -> None:
        self.name, self.wrong, self.tools = name, wrong, []

    def answer(self, conversations, **settings):
        self.tools.append(settings.get("tools"))
        found = []
        for messages in conversations:
            city = messages[-1]["content"].split()[2].rstrip(",")
            found.append(calling("weather", {"city": city, "unit": "F" if self.wrong else "C"}))
        return found


def test_eval_tools_compares_models_and_records_the_run(tmp_path, monkeypatch, capsys):
    path = tmp_path / "tools.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(example(city)) for city in CITIES))
    models = {"base": Scripted("base", wrong=True), "tuned": Scripted("tuned", wrong=False)}
    monkeypatch.setattr("tunelab.evals.candidates.open_candidate", lambda name: models[name])
    monkeypatch.setattr("tunelab.evals.candidates.check_models", lambda names: None)

    argv = ["eval", "tools", "--data", str(path), "-m", "base", "-m", "tuned"]
    code = main([*argv, "--output-dir", str(tmp_path / "run"), "--json"])

    out = capsys.readouterr().out
    assert code == 0
    result = orjson.loads(out)
    base, tuned = result["models"]["base"], result["models"]["tuned"]
    assert (base["function_match"], base["arguments_valid"], base["exact_match"]) == (1, 1, 0)
    assert (tuned["exact_match"], tuned["no_call_rate"]) == (1, 0)
    assert models["tuned"].tools == [[WEATHER, TIME]]  # asked with the example's tools
    [run] = runs.list_runs(kind="tools")
    assert runs.headline(run).values == {"base": 0.0, "tuned": 1.0}
    assert len(runs.run_outputs(run.id, "tuned")) == len(CITIES)


def test_the_local_provider_reads_the_calls_of_a_batch(monkeypatch):

    asked = {}

    def generate(model, tokenizer, conversations, *, tools=None, **settings):
        asked["tools"] = tools
        call = '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        return [Answer(call, "stop") for _ in conversations]

    monkeypatch.setattr(answering.generation, "generate", generate)

    @contextlib.contextmanager
    def running():  # a loaded model's run: the model and its adapter (none)
        yield None, None

    loaded = SimpleNamespace(model=None, tokenizer=build_tokenizer(), running=running)
    [answer] = answering.answer_chats(loaded, [ITEM.messages], tools=[WEATHER])

    assert asked["tools"] == [WEATHER]
    assert answer.finish_reason == "tool_calls"
    assert [(c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [
        ("weather", {"city": "Oslo"})
    ]
