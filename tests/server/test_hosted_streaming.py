"""`stream: true` for models a hosted provider answers, through a real `tunelab serve`.

The provider is `fake_upstream.Upstream` on loopback, reached as a named OpenAI-compatible
endpoint (`up/MODEL`, with its own key) and as Anthropic (`anthropic/MODEL`, through
`ANTHROPIC_BASE_URL`, a host that is not Anthropic's: it gets no ANTHROPIC_API_KEY). Deltas
must reach the client while the upstream is still answering,
keys must never reach the client or the server's log, and an upstream failing mid-answer must
end the stream with OpenAI's error event.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from fake_upstream import DELTAS, USAGE, Upstream
from tunelab.providers.endpoints import add_endpoint
from tunelab.providers.provider import PLACEHOLDER_KEY

ENDPOINT_KEY = "up-PLANTED-endpoint-5e4d3c"
ANTHROPIC_KEY = "sk-ant-PLANTED-7f6e5d"
KEYS = (ENDPOINT_KEY, ANTHROPIC_KEY)
MODELS = [f"up/m-{b}" for b in ("gated", "breaks", "drops", "refuses", "whole")] + [
    f"anthropic/claude-x-{b}" for b in ("gated", "breaks", "drops", "refuses")
]


@pytest.fixture(scope="module")
def upstream():
    running = Upstream()
    yield running
    running.close()


@pytest.fixture(scope="module")
def relay(upstream, tmp_path_factory):
    """A `tunelab serve` whose hosted models answer from `upstream`."""
    home = tmp_path_factory.mktemp("relay-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TUNELAB_HOME", str(home))
        env.setenv("UP_KEY", ENDPOINT_KEY)
        env.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
        env.setenv("ANTHROPIC_BASE_URL", upstream.url)
        env.chdir(home)  # no stray .env
        add_endpoint("up", f"{upstream.url}/v1", "UP_KEY")
        from conftest import Server

        flags = [flag for model in MODELS for flag in ("--model", model)]
        running = Server(home, *flags)
    yield running
    running.stop()


@pytest.fixture
def fresh(upstream):
    upstream.gate.clear()
    upstream.released.clear()
    upstream.headers.clear()
    return upstream


def events(relay, model: str, gate=None) -> list:
    """The SSE data of a streamed answer; `gate` is opened once the first text has come."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    seen = []
    with httpx.stream("POST", f"{relay.url}/chat/completions", json=body, timeout=300) as answer:
        assert answer.status_code == 200, answer.read()
        for line in answer.iter_lines():
            if not line.startswith("data: "):
                continue
            seen.append(line.removeprefix("data: "))
            if gate is not None and _text([seen[-1]]):
                gate.set()
    return [data if data == "[DONE]" else json.loads(data) for data in seen]


def _text(data: list) -> str:
    chunks = [json.loads(d) if isinstance(d, str) else d for d in data if d != "[DONE]"]
    return "".join(
        choice["delta"].get("content") or "" for c in chunks for choice in c.get("choices", [])
    )


@pytest.mark.parametrize("model", ["up/m-gated", "anthropic/claude-x-gated"])
def test_deltas_reach_the_client_while_the_upstream_still_answers(relay, fresh, model):
    seen = events(relay, model, gate=fresh.gate)
    # The upstream held back the rest of its answer until the client had the first delta.
    assert fresh.released == [True]
    assert _text(seen) == "".join(DELTAS)
    assert [c["choices"][0]["delta"]["content"] for c in seen[1:4]] == list(DELTAS)
    assert seen[4]["choices"][0]["finish_reason"] == "stop"
    assert seen[-2]["usage"]["prompt_tokens"] == USAGE["prompt_tokens"]
    assert seen[-2]["usage"]["completion_tokens"] == USAGE["completion_tokens"]
    assert seen[-1] == "[DONE]"
    if model.startswith("up/"):
        assert ENDPOINT_KEY in fresh.credentials()
    else:  # ANTHROPIC_BASE_URL names a stranger: Anthropic's own key stays here
        assert ANTHROPIC_KEY not in fresh.credentials()
        assert PLACEHOLDER_KEY in fresh.credentials()


@pytest.mark.parametrize(
    "model", ["up/m-breaks", "up/m-drops", "anthropic/claude-x-breaks", "anthropic/claude-x-drops"]
)
def test_an_upstream_failing_mid_answer_ends_the_stream_with_an_error_event(relay, fresh, model):
    seen = events(relay, model)
    assert _text(seen[:-1]) == DELTAS[0]  # what came before the failure was relayed
    error = seen[-1]["error"]
    assert error["code"] == "provider_unavailable" and error["type"] == "server_error"
    assert "[DONE]" not in seen
    shown = json.dumps(seen) + relay.output()
    assert fresh.credentials() and not any(key in shown for key in KEYS)
    if model.endswith("breaks"):  # the upstream's own words come through, its quote of the key not
        assert "the model crashed" in error["message"] and "***" in error["message"]


def test_the_openai_sdk_raises_on_the_error_event(relay, fresh):
    client = openai.OpenAI(base_url=relay.url, api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Hi"}]
    stream = client.chat.completions.create(model="up/m-breaks", stream=True, messages=messages)
    texts = []
    with pytest.raises(openai.APIError, match="failed mid-answer"):
        for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts) == DELTAS[0]


@pytest.mark.parametrize("model", ["up/m-refuses", "anthropic/claude-x-refuses"])
def test_a_refusal_before_any_delta_is_an_http_error_without_the_key(relay, fresh, model):
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    answer = httpx.post(f"{relay.url}/chat/completions", json=body, timeout=300)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "provider_auth_failed"
    assert fresh.credentials() and not any(key in answer.text + relay.output() for key in KEYS)


def test_a_server_that_answers_whole_still_streams_its_answer(relay, fresh):
    seen = events(relay, "up/m-whole")
    assert _text(seen) == "".join(DELTAS)
    assert seen[-2]["usage"]["total_tokens"] == USAGE["total_tokens"]
