"""One resolution of model names to the provider that answers them, and the provider model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.providers.base import ChatStream
from tunelab.providers.provider import CHAT, FINE_TUNING, Provider
from tunelab.providers.registry import get_provider, provider_names
from tunelab.providers.resolve import check_chat_model, resolve_chat_model
from tunelab.registry import Store
from tunelab.types import Answer, Usage


def where(name: str) -> tuple:
    model = resolve_chat_model(name)
    return model.provider, model.model, model.base_url


def test_builtin_providers_declare_what_they_can_do():
    assert {"local", "openai", "together"} <= set(provider_names(FINE_TUNING))
    assert {"local", "openai", "together"} <= set(provider_names(CHAT))
    local = get_provider("local")
    assert local.supports(FINE_TUNING) and local.supports(CHAT)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o-mini", ("openai", "gpt-4o-mini-2024-07-18", None)),
        ("openai/gpt-4o", ("openai", "gpt-4o", None)),
        ("qwen3-8b", ("together", "Qwen/Qwen3-8B", None)),
        ("together/Qwen/Qwen3-8B", ("together", "Qwen/Qwen3-8B", None)),
        ("smollm2-135m-instruct", ("local", "smollm2-135m-instruct", None)),
        ("HuggingFaceTB/SmolLM2-360M", ("local", "HuggingFaceTB/SmolLM2-360M", None)),
        ("m@http://127.0.0.1:9/v1", ("openai-compatible", "m", "http://127.0.0.1:9/v1")),
    ],
)
def test_names_resolve_to_the_provider_that_answers_them(name, expected):
    assert where(name) == expected


def test_every_listed_base_model_resolves_by_its_listed_name_to_the_provider_listing_it():
    from tunelab.providers.models import list_models

    listed = list_models(kind="base")
    assert "claude-sonnet-4-20250514" in {m.id for m in listed}  # bare, as the studio shows
    for model in listed:
        assert resolve_chat_model(model.id).provider == model.provider, model.id
        for alias in model.aliases:
            assert resolve_chat_model(alias).provider == model.provider, alias


def test_a_listed_claude_model_is_answered_by_anthropic_by_its_bare_name(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    assert where("claude-sonnet-4-20250514") == ("anthropic", "claude-sonnet-4-20250514", None)
    assert where("anthropic/claude-sonnet-4-20250514")[:2] == where("claude-sonnet-4-20250514")[:2]
    check_chat_model("claude-3-5-haiku-20241022")  # no unknown_model


def test_a_directory_is_answered_by_this_machine_from_its_weights(tmp_path):
    model = resolve_chat_model(str(tmp_path))
    assert (model.provider, model.model) == ("local", str(tmp_path))
    assert model.weights_here and model.gives_logprobs


def test_registry_models_resolve_to_their_provider_and_endpoint(tmp_path):
    with Store() as store:
        store.put_model(
            "ft:smol:local:x:1", provider="local", kind="fine-tuned", path=str(tmp_path)
        )
        store.put_model(
            "ft:llama:together:abc",
            provider="together",
            kind="fine-tuned",
            details={"base_url": "http://example.test/v1"},
        )
    local = resolve_chat_model("ft:smol:local:x:1")
    assert (local.provider, local.model, local.weights_here) == ("local", str(tmp_path), True)
    assert where("ft:llama:together:abc") == (
        "together",
        "ft:llama:together:abc",
        "http://example.test/v1",
    )


def test_an_unknown_ft_name_is_refused():
    with pytest.raises(TunelabError) as caught:
        resolve_chat_model("ft:nothing:org:x:1")
    assert caught.value.code == "model_not_found"


def test_what_a_provider_does_not_offer_is_refused_by_name():
    class ChatOnly(Provider):
        name = "chat-only"
        capabilities = frozenset({CHAT})

        def chat(self, model, messages, **options):
            return Answer("hi there", "stop", Usage(3, 2), model=model)

    provider = ChatOnly()
    with pytest.raises(TunelabError) as caught:
        provider.create_job(None)
    assert caught.value.code == "unsupported_operation" and "chat-only" in caught.value.message
    stream = provider.stream_chat("m", [{"role": "user", "content": "hi"}])
    assert list(stream) == ["hi there"]
    assert stream.result.usage.total_tokens == 5


def test_a_stream_hands_over_its_result_once_read():
    def events():
        yield "a"
        yield "b"
        return Answer("ab", "length", Usage(1, 2), latency=0.5, model="m")

    stream = ChatStream(events())
    assert stream.result is None
    assert "".join(stream) == "ab"
    assert (stream.result.finish_reason, stream.result.latency) == ("length", 0.5)


def test_only_the_ground_floor_names_this_machine():
    """The core asks providers what they can do; it never compares a job's provider to "local"."""
    import tunelab

    root = Path(tunelab.__file__).parent
    sources = [p for p in root.rglob("*") if p.suffix in (".py", ".html")]  # code and templates
    naming = {str(p.relative_to(root)) for p in sources if '"local"' in p.read_text()}
    assert naming == {"types.py"}  # LOCAL_PROVIDER


ASKED_FOR = "openai/gpt-4o-mini"


@pytest.mark.parametrize(
    "argv",
    [
        ["chat", ASKED_FOR, "hi"],
        ["serve", "--model", ASKED_FOR],
        ["eval", "classify", "--data", "{data}", "--model", ASKED_FOR],
        ["eval", "judge", "--judge-model", ASKED_FOR, "--data", "{data}", "--model", ASKED_FOR],
        ["generate-conversations", "--ideas", "{ideas}", "--model", ASKED_FOR, "--output", "{out}"],
    ],
    ids=["chat", "serve", "eval", "judge", "generation"],
)
def test_one_function_resolves_the_model_names_of_every_command(
    argv, monkeypatch, tmp_path, capsys
):
    from tunelab.cli import main
    from tunelab.server import inference

    asked = []

    def resolve(name):
        asked.append(name)
        raise TunelabError("resolved_here", f"{name} went to the one resolver")

    monkeypatch.setattr("tunelab.providers.resolve.resolve_chat_model", resolve)
    data = tmp_path / "q.tsv"
    data.write_text("text\tlabel\nWho wrote Hamlet?\tHUM\nWhere is Lima?\tLOC\n")
    (tmp_path / "ideas.txt").write_text("capital of France\n")
    files = {"data": data, "ideas": tmp_path / "ideas.txt", "out": tmp_path / "out.db"}
    code = main([arg.format(**files) for arg in argv])
    assert code != 0 and "resolved_here" in capsys.readouterr().err
    assert ASKED_FOR in asked
    # The server's requests resolve through the same function (imported by name there).
    assert inference.resolve_chat_model is resolve_chat_model
