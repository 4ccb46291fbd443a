"""Anthropic (chat only) over hand-built Messages API exchanges: `tunelab chat` streams,
`tunelab eval judge` judges with Claude, a 529 is retried, a 401 never shows the key."""

from __future__ import annotations

import json
import re

import httpx
import orjson
import pytest

import tunelab.evals.conversations
from tunelab.cli import main
from tunelab.evals.candidates import Answer, Candidate
from tunelab.providers.registry import get_provider
from tunelab.providers.resolve import check_chat_model

MESSAGES = "https://api.anthropic.com/v1/messages"
KEY = "sk-ant-PLANTED-5e7f1c2a9b"
MODEL = "claude-sonnet-4-20250514"


@pytest.fixture
def key(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    return KEY


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def message(text: str, stop_reason: str = "end_turn") -> dict:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }


def sse(*deltas: str, stop_reason: str = "end_turn") -> httpx.Response:
    start = {**message(""), "content": [], "stop_reason": None}
    events = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for text in deltas:
        delta = {"type": "text_delta", "text": text}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "usage": {"output_tokens": 3},
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def error(status: int, kind: str, text: str, **headers) -> httpx.Response:
    body = {"type": "error", "error": {"type": kind, "message": text}}
    return httpx.Response(status, json=body, headers=headers)


def test_chat_streams_claude_with_the_system_prompt_mapped(api, key, capsys):
    route = api.post(MESSAGES).mock(return_value=sse("Bonjour", " !"))
    code, out, err = cli(capsys, "chat", f"anthropic/{MODEL}", "hi", "--system", "Be brief.")
    assert code == 0, err
    assert out == "Bonjour !\n"
    sent = orjson.loads(route.calls.last.request.content)
    assert sent["model"] == MODEL and sent["stream"] is True
    assert sent["system"] == "Be brief." and sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["max_tokens"] == 512  # Anthropic requires it: the command's default
    headers = route.calls.last.request.headers  # the SDK sends it in one of the two
    assert KEY in headers.get("x-api-key", "") + headers.get("authorization", "")


def test_an_overloaded_anthropic_is_asked_again(api, key, capsys):
    route = api.post(MESSAGES).mock(
        side_effect=[
            error(529, "overloaded_error", "Overloaded", **{"retry-after": "0"}),
            sse("still here"),
        ]
    )
    code, out, err = cli(capsys, "chat", f"anthropic/{MODEL}", "hi")
    assert code == 0, err
    assert out == "still here\n" and route.call_count == 2


def test_a_refused_key_is_one_line_without_the_key(api, key, capsys):
    api.post(MESSAGES).mock(
        return_value=error(401, "authentication_error", f"invalid x-api-key {KEY}")
    )
    code, out, err = cli(capsys, "chat", f"anthropic/{MODEL}", "hi")
    assert code == 1
    assert "provider_auth_failed" in err and "ANTHROPIC_API_KEY" in err
    assert KEY not in out + err


def test_a_missing_key_names_the_variable(api, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "chat", f"anthropic/{MODEL}", "hi")
    assert code == 1 and "missing_api_key" in err and "ANTHROPIC_API_KEY" in err


def test_whole_answers_carry_usage_and_why_they_ended(api, key):
    route = api.post(MESSAGES).mock(
        return_value=httpx.Response(200, json=message("Paris", stop_reason="max_tokens"))
    )
    messages = [
        {"role": "system", "content": "A"},
        {"role": "system", "content": "B"},
        {"role": "user", "content": "Capital of France?"},
    ]
    result = get_provider("anthropic").chat(MODEL, messages, stop=["\n"], temperature=0.0)
    assert (result.text, result.finish_reason) == ("Paris", "length")
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (12, 3)
    sent = orjson.loads(route.calls.last.request.content)
    assert sent["system"] == "A\n\nB" and sent["stop_sequences"] == ["\n"]
    assert sent["max_tokens"] == 1024 and "stream" not in sent


class Scripted(Candidate):
    def __init__(self, name: str, text: str) -> None:
        self.name, self.text = name, text

    def answer(self, conversations, **settings):
        return [Answer(self.text) for _ in conversations]


def judge(request: httpx.Request) -> httpx.Response:
    """Claude as the judge: the answer that names Paris wins."""
    user = orjson.loads(request.content)["messages"][-1]["content"]
    blocks = dict(re.findall(r'<data-\w+ name="([^"]+)">\n(.*?)\n</data-\w+>', user, re.DOTALL))
    first, second = "Paris" in blocks["first answer"], "Paris" in blocks["second answer"]
    winner = "tie" if first == second else ("first" if first else "second")
    return httpx.Response(200, json=message(json.dumps({"winner": winner, "reason": "city"})))


def test_claude_judges_pairwise(api, key, tmp_path, capsys, monkeypatch):
    models = {"good": Scripted("good", "It is Paris."), "vague": Scripted("vague", "Europe?")}
    monkeypatch.setattr(tunelab.evals.conversations, "open_candidate", models.__getitem__)
    check = check_chat_model  # the scripted names stand in for models; Claude is checked
    monkeypatch.setattr(
        "tunelab.evals.candidates.check_models",
        lambda names: [check(n) for n in names if n not in models],
    )
    ideas = tmp_path / "ideas.txt"
    ideas.write_text("capital of France\ncity of the Louvre\n")
    made = []
    for name in models:
        made += ["--conversations", str(tmp_path / f"{name}.db")]
        code, _, err = cli(
            capsys,
            "generate-conversations",
            "--ideas",
            str(ideas),
            "--model",
            name,
            "--output",
            made[-1],
        )
        assert code == 0, err
    route = api.post(MESSAGES).mock(side_effect=judge)
    code, out, err = cli(
        capsys,
        "eval",
        "judge",
        "--judge-model",
        f"anthropic/{MODEL}",
        "--mode",
        "pairwise",
        *made,
        "--json",
    )
    assert code == 0, err
    result = orjson.loads(out)
    assert result["records"]["good"] == {"wins": 2.0, "games": 2}
    assert route.call_count >= 2 and KEY not in out + err
