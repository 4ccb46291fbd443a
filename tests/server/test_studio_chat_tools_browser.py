"""The studio's Chat page with structured outputs and tools, in a real browser on the bundled
model: a JSON schema the answer follows, a tool the model must call, shown as a call (its
function name and arguments) rather than as text, and a tools box that is not a list of
function tools refused with its reason.
"""

from __future__ import annotations

import json

import orjson
import pytest

from studio_browser import browser_page, require_browser, screenshot_dir, shoot

BUNDLED = "smollm2-135m-instruct"
MINUTE = 60_000
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture
def chat(smollm2_home, start_server):
    require_browser()
    server = start_server(smollm2_home)
    with browser_page(server.url.removesuffix("/v1")) as page:
        page.goto("/chat")
        page.select_option("#model", BUNDLED)
        page.fill("input[name=max_tokens]", "48")
        page.locator("#structured-options summary").click()
        yield page


def _ask(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.locator("#send").click()
    page.locator(".answer-end").last.filter(has_text="tokens").wait_for(timeout=5 * MINUTE)


def test_a_tool_call_shows_as_a_call(chat, tmp_path):
    page = chat
    page.fill("#tools", json.dumps([WEATHER]))
    page.select_option("#tool-choice", "required")
    page.uncheck("#parallel-tool-calls")  # one call: the small model would repeat it
    _ask(page, "What is the weather in Paris?")
    call = page.locator(".turn .tool-call")
    assert call.count() == 1
    assert call.locator(".tool-name").inner_text() == "get_weather"
    arguments = orjson.loads(call.locator(".tool-arguments").inner_text())
    assert isinstance(arguments["city"], str)
    shoot(page, screenshot_dir(tmp_path), "chat-tools")
    assert page.console_errors == []


def test_a_json_schema_shapes_the_answer_and_bad_tools_are_refused(chat):
    page = chat
    page.select_option("#json-mode", "json_schema")
    page.fill("#json-schema", json.dumps(CITY))
    _ask(page, "Name the capital of France.")
    answer = orjson.loads(page.locator(".model-answer").last.inner_text())
    assert set(answer) == {"city"}
    assert page.locator(".tool-call").count() == 0
    page.select_option("#json-mode", "text")
    page.fill("#tools", json.dumps(WEATHER))  # one tool, not a list of them
    page.fill("#prompt", "Weather?")
    page.locator("#send").click()
    assert "JSON list of function tools" in page.locator("#conversation .error").inner_text()
    assert page.console_errors == []
