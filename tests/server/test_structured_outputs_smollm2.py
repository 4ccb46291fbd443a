"""Structured outputs and tools with the bundled SmolLM2 behind a real `tunelab serve`,
through the unmodified `openai` SDK: 200 strict `json_schema` requests over ten schemas
(nested objects, enums, arrays, nullable fields), sampled at four temperatures, all parse
and validate and end by themselves (`finish_reason: "stop"`); `tool_choice="required"`
always gives a call of a declared function with arguments valid against its schema; whole
and streamed alike.

The whole answers are sent concurrently and unseeded, so the server answers those of one
temperature in batches (a seeded request, like a streamed one, runs alone so that it is
reproducible); the streamed ones are seeded."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tunelab.data.json_schema import schema_problem
from tunelab.data.tool_calls import call_problem

pytestmark = pytest.mark.slow

BUNDLED = "smollm2-135m-instruct"
MAX_TOKENS = 80  # a constrained answer ends within it, closed (`engine.grammar_budget`)
REQUESTS_PER_SCHEMA = 20
TEMPERATURES = (0.0, 0.5, 0.8, 1.0)
STREAMED_SEEDS = (1,)  # each schema and tool prompt also streamed, seeded: one at a time


def strict(properties: dict) -> dict:
    """An object schema as OpenAI's strict mode wants it: every property required, no other."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


STRING, INTEGER, NUMBER, BOOLEAN = ({"type": t} for t in ("string", "integer", "number", "boolean"))
SCHEMAS = {
    "person": ("Describe a famous scientist.", strict({"name": STRING, "age": INTEGER})),
    "sentiment": (
        "Classify: 'I loved this film, the ending was perfect.'",
        strict({"label": {"enum": ["positive", "negative", "neutral"]}, "confidence": NUMBER}),
    ),
    "address": (
        "Give the address of a museum in Paris.",
        strict(
            {
                "street": STRING,
                "city": STRING,
                "country": strict({"code": {"enum": ["US", "FR", "DE"]}, "name": STRING}),
            }
        ),
    ),
    "todo": (
        "Plan my Saturday as a to-do list.",
        strict({"items": {"type": "array", "items": strict({"task": STRING, "done": BOOLEAN})}}),
    ),
    "tags": (
        "Tag this article: 'Rust 2.0 released with faster compile times.'",
        strict({"tags": {"type": "array", "items": STRING}, "count": INTEGER}),
    ),
    "order": (
        "Write an order for three books.",
        strict(
            {
                "id": STRING,
                "lines": {"type": "array", "items": strict({"sku": STRING, "qty": INTEGER})},
                "status": {"enum": ["new", "paid", "shipped"]},
            }
        ),
    ),
    "event": (
        "Describe a birthday party.",
        strict(
            {
                "title": STRING,
                "date": STRING,
                "attendees": {
                    "type": "array",
                    "items": strict({"name": STRING, "role": {"enum": ["host", "guest"]}}),
                },
            }
        ),
    ),
    "note": (
        "Is it raining? Answer with a note if you have one.",
        strict({"raining": BOOLEAN, "note": {"type": ["string", "null"]}}),
    ),
    "matrix": (
        "Write a 2x2 identity matrix.",
        strict({"rows": {"type": "array", "items": {"type": "array", "items": INTEGER}}}),
    ),
    "product": (
        "Describe a wooden table for sale.",
        strict(
            {
                "product": strict(
                    {
                        "name": STRING,
                        "price": NUMBER,
                        "dimensions": strict({"w": NUMBER, "h": NUMBER, "d": NUMBER}),
                    }
                ),
                "in_stock": BOOLEAN,
            }
        ),
    ),
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": strict({"city": STRING, "unit": {"enum": ["celsius", "fahrenheit"]}}),
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_books",
        "description": "Search the library.",
        "parameters": strict(
            {
                "query": STRING,
                "filters": strict(
                    {"year_from": INTEGER, "languages": {"type": "array", "items": STRING}}
                ),
            }
        ),
    },
}
TOOL_PROMPTS = ("What is the weather in Oslo?", "Find books about whales from after 1990.")


@pytest.fixture
def sdk(smollm2_home, start_server):
    """A client of `tunelab serve` on the home other SmolLM2 tests use (the model is
    converted from its GGUF once)."""
    server = start_server(smollm2_home, "--no-worker", "--max-batch-size", "32")
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=600)


def ask(sdk: openai.OpenAI, fields: dict, stream: bool) -> tuple[str, list, str]:
    """One answer's text, tool calls (name, arguments) and finish reason."""
    if not stream:
        choice = sdk.chat.completions.create(model=BUNDLED, **fields).choices[0]
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or ()]
        return choice.message.content or "", calls, choice.finish_reason
    text, calls, finish = [], {}, None
    for chunk in sdk.chat.completions.create(model=BUNDLED, stream=True, **fields):
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            for call in choice.delta.tool_calls or ():
                name, arguments = calls.get(call.index, ("", ""))
                function = call.function
                calls[call.index] = (
                    name + (function.name or "" if function else ""),
                    arguments + (function.arguments or "" if function else ""),
                )
            finish = choice.finish_reason or finish
    return "".join(text), [calls[i] for i in sorted(calls)], finish


def answer_all(sdk: openai.OpenAI, requests: list[tuple[dict, bool]]) -> list:
    with ThreadPoolExecutor(32) as pool:
        return list(pool.map(lambda request: ask(sdk, *request), requests))


def sampled(fields: dict) -> list[tuple[dict, bool]]:
    """The request sent whole at each temperature in turn, then streamed with each seed."""
    whole = [
        ({**fields, "temperature": TEMPERATURES[i % len(TEMPERATURES)]}, False)
        for i in range(REQUESTS_PER_SCHEMA)
    ]
    streamed = [({**fields, "temperature": 0.8, "seed": s}, True) for s in STREAMED_SEEDS]
    return whole + streamed


def test_strict_json_schema_answers_parse_and_validate(sdk):
    requests, schemas = [], []
    for name, (prompt, schema) in SCHEMAS.items():
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        }
        fields = {
            "messages": [{"role": "user", "content": f"{prompt} Answer in JSON."}],
            "response_format": response_format,
            "max_tokens": MAX_TOKENS,
        }
        asked = sampled(fields)
        requests += asked
        schemas += [(name, schema)] * len(asked)
    answers = answer_all(sdk, requests)
    problems = []
    for (name, schema), (text, _, finish) in zip(schemas, answers, strict=True):
        try:
            problem = schema_problem(json.loads(text), schema, "answer")
        except json.JSONDecodeError as err:
            problem = f"not JSON ({err})"
        if problem or finish != "stop":
            problems.append(f"{name}: {problem or 'finish ' + str(finish)}: {text[:200]!r}")
    assert not problems, f"{len(problems)} of {len(answers)}:\n" + "\n".join(problems)


def test_required_tool_choice_always_calls_a_declared_tool_validly(sdk):
    declared = {tool["function"]["name"]: tool["function"] for tool in (WEATHER, SEARCH)}
    requests = []
    for prompt in TOOL_PROMPTS:
        fields = {
            "messages": [{"role": "user", "content": prompt}],
            "tools": [WEATHER, SEARCH],
            "tool_choice": "required",
            "max_tokens": MAX_TOKENS,
        }
        requests += sampled(fields)
    answers = answer_all(sdk, requests)
    problems = []
    for text, calls, finish in answers:
        found = [call_problem(name, arguments, declared)[1] for name, arguments in calls]
        if not calls or finish != "tool_calls" or any(found):
            problems.append(f"{finish}: {calls or text!r}: {[p for p in found if p]}")
    assert not problems, f"{len(problems)} of {len(answers)}:\n" + "\n".join(problems)
