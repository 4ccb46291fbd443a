"""The Chat page's conversation through FastAPI's TestClient: each model hears its own earlier
answers, and a saved conversation is appended, checked, to the studio's chat dataset."""

from __future__ import annotations

import orjson
from fastapi.testclient import TestClient

from tunelab.server.app import ServerConfig, create_app
from tunelab.server.ui.chat_pages import conversation
from tunelab.settings import get_settings

HISTORY = [{"prompt": "hi", "answers": {"a": "hello from a", "b": ""}}]


def test_each_model_hears_its_own_earlier_answers():
    asked_a = conversation("a", "be brief", HISTORY, "and now?")
    assert [m["role"] for m in asked_a] == ["system", "user", "assistant", "user"]
    assert asked_a[2]["content"] == "hello from a"
    assert conversation("b", "", HISTORY, "and now?") == [{"role": "user", "content": "and now?"}]


def test_saved_conversations_are_appended_as_chat_examples():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    app = create_app(ServerConfig(start_worker=False))
    with TestClient(app, base_url="http://localhost") as c:
        for _ in range(2):
            saved = c.post(
                "/chat/save",
                data={"dataset": "greetings", "conversation": orjson.dumps(messages).decode()},
            )
            assert 'id="saved"' in saved.text
        unanswered = c.post("/chat/save", data={"dataset": "greetings", "conversation": "[]"})
        assert "invalid_conversation" in unanswered.text
    (path,) = (get_settings().home / "studio" / "sources").glob("*/greetings.jsonl")
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line)["messages"] for line in lines] == [messages, messages]
