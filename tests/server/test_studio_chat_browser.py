"""The studio's Chat page in a real browser, on the bundled model: a conversation (history
sent each turn, the box emptied, newest at the bottom above the box), copy, clear, saving it
as a chat example that the Data page opens; and pickers that mark the hosted models whose keys
are not set and show every model's full name.
"""

from __future__ import annotations

import re

import orjson
import pytest

from studio_browser import browser_page, require_browser, screenshot_dir, shoot

BUNDLED = "smollm2-135m-instruct"
MINUTE = 60_000
FIRST = "My name is Ada. Please greet me."
SECOND = "What is my name?"


@pytest.fixture
def studio(smollm2_home, start_server):
    require_browser()
    server = start_server(smollm2_home)
    with browser_page(server.url.removesuffix("/v1")) as page:
        yield server, page


def _ask(page, prompt: str, turn: int) -> None:
    page.fill("#prompt", prompt)
    page.locator("#send").click()
    page.locator(".turn").nth(turn).locator(".answer-end").filter(has_text="tokens").wait_for(
        timeout=5 * MINUTE
    )


def test_chat_is_a_conversation_that_can_be_saved_as_training_data(studio, tmp_path):
    server, page = studio
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto("/chat")
    page.select_option("#model", BUNDLED)
    page.fill("input[name=max_tokens]", "16")
    _ask(page, FIRST, 0)
    assert page.locator("#prompt").input_value() == ""  # the box is emptied for the next one
    first_answer = page.locator(".model-answer").first.inner_text()
    with page.expect_request(re.compile(r"/chat/ask$")) as asked:
        _ask(page, SECOND, 1)
    history = orjson.loads(dict(_form(asked.value.post_data))["history"])
    assert [t["prompt"] for t in history] == [FIRST]  # the earlier turn goes with the question
    assert history[0]["answers"][BUNDLED].strip() == first_answer.strip()
    turns = page.locator("#conversation .user-message")
    assert [turns.nth(i).inner_text() for i in range(2)] == [FIRST, SECOND]  # oldest first
    form_top = page.locator("#chat-form").bounding_box()["y"]
    assert page.locator(".turn").nth(1).bounding_box()["y"] < form_top  # the box is below

    page.locator(".copy-answer").first.click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.strip() == first_answer.strip()

    page.fill("#save-dataset", "greetings")
    page.locator("#save-conversation").click()
    page.locator("#saved").wait_for()
    shoot(page, screenshot_dir(tmp_path), "chat-conversation")
    saved = list((server.home / "studio" / "sources").glob("*/greetings.jsonl"))
    assert len(saved) == 1
    lines = saved[0].read_bytes().splitlines()
    roles = [m["role"] for m in orjson.loads(lines[0])["messages"]]
    assert len(lines) == 1 and roles == ["user", "assistant", "user", "assistant"]
    source_url = page.locator("#saved a").get_attribute("href")
    page.locator("#clear-chat").click()
    assert page.locator("#conversation .turn").count() == 0
    page.goto(source_url)  # the saved conversations open as a chat source
    page.wait_for_url(re.compile(r"/data/sources/"))
    assert page.locator("#detected-kind").inner_text() == "chat"
    assert page.console_errors == []


def _form(body: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(body, keep_blank_values=True)


def test_pickers_mark_models_without_a_key_and_show_full_names(studio):
    _, page = studio
    for url, picker in (("/chat", "#model"), ("/evals/new", "select[name=model]")):
        page.goto(url)
        hosted = page.locator(f"{picker} option[value='gpt-4o-mini-2024-07-18']")
        assert hosted.is_disabled() and "key not set" in hosted.inner_text()
        assert not page.locator(f"{picker} option[value='{BUNDLED}']").is_disabled()
        assert "OPENAI_API_KEY" in page.locator("#missing-keys").inner_text()
        assert _widest_option(page, picker) <= _text_room(page, picker)


def _widest_option(page, picker: str) -> float:
    """The width of the longest option's text in the picker's font, in CSS pixels."""
    return page.eval_on_selector(
        picker,
        """select => {
            const context = document.createElement("canvas").getContext("2d");
            context.font = getComputedStyle(select).font;
            return Math.max(...Array.from(select.options, o => context.measureText(o.text).width));
        }""",
    )


def _text_room(page, picker: str) -> float:
    """What the closed picker shows of its text: its width less padding and the arrow."""
    return page.eval_on_selector(picker, "select => select.clientWidth - 32")
