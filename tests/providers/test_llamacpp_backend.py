"""llama.cpp as the local provider's backend: which requests and models it answers, the GGUF
cache it answers from, and (when llama-cpp-python is installed) the engine's greedy answers.

The tests that run llama.cpp are skipped when the optional `llamacpp` extra is absent: `make
install` does not install it."""

from __future__ import annotations

import importlib.util

import pytest

from tiny import save_tiny_adapter, save_tiny_model
from tunelab.engine.gguf_cache import cached_gguf
from tunelab.errors import TunelabError
from tunelab.providers.base import ChatOptions
from tunelab.providers.local import llamacpp
from tunelab.providers.local.llamacpp import LlamaCppBackend, check_backend, completion_settings

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (pip install 'tunelab[llamacpp]')",
)

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "How many legs does a spider have?",
]


def test_llamacpp_without_the_extra_is_refused_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(llamacpp, "installed", lambda: False)
    with pytest.raises(TunelabError) as caught:
        check_backend("llamacpp")
    assert caught.value.code == "llamacpp_not_installed"
    assert "tunelab[llamacpp]" in caught.value.hint
    check_backend("auto")  # auto falls back to the engine instead
    assert not LlamaCppBackend("auto").takes(ChatOptions())


def test_torch_never_takes_a_request():
    assert not LlamaCppBackend("torch").takes(ChatOptions())


def test_auto_leaves_what_llamacpp_does_not_serve_here_to_the_engine(monkeypatch):
    monkeypatch.setattr(llamacpp, "installed", lambda: True)
    backend = LlamaCppBackend("auto")
    assert backend.takes(ChatOptions(logit_bias=((5, -100.0),)))
    assert not backend.takes(ChatOptions(logprobs=True, top_logprobs=2))
    assert not backend.takes(ChatOptions(response_format={"type": "json_object"}))
    assert not backend.takes(ChatOptions(grammar='start: "a"'))


def test_llamacpp_refuses_a_field_it_does_not_serve_by_its_name(monkeypatch):
    monkeypatch.setattr(llamacpp, "installed", lambda: True)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(TunelabError) as caught:
        LlamaCppBackend("llamacpp").takes(ChatOptions(tools=(tool,)))
    assert caught.value.code == "unsupported_on_llamacpp"
    assert "tools" in caught.value.message


def test_auto_answers_only_fine_tunes_with_llamacpp(tmp_path, monkeypatch):
    monkeypatch.setattr(llamacpp, "installed", lambda: True)
    base = save_tiny_model(tmp_path / "base")
    backend = LlamaCppBackend("auto")
    assert backend.model_for(str(base)) is None  # a plain model directory: the engine's
    assert backend.cached(str(base)) == (True, None)
    assert backend.cached(str(tmp_path / "never-asked")) == (False, None)


def test_greedy_settings_decode_greedily_and_seeds_differ_per_choice():
    greedy = completion_settings(ChatOptions(max_tokens=8, seed=3))
    assert greedy["temperature"] == 0.0 and greedy["top_k"] == 1 and "seed" not in greedy
    sampled = completion_settings(ChatOptions(temperature=0.7, seed=3), index=2)
    assert sampled["seed"] == 5 and sampled["top_k"] == 0


def test_a_fine_tune_converts_once_and_trained_again_converts_anew(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    first = cached_gguf(str(save_tiny_adapter(tmp_path / "one", base, seed=1)))
    written = first.stat().st_mtime_ns
    assert cached_gguf(str(tmp_path / "one")) == first
    assert first.stat().st_mtime_ns == written  # found, not written again
    other = cached_gguf(str(save_tiny_adapter(tmp_path / "two", base, seed=2)))
    assert other != first and other.exists()
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging left


@needs_llama_cpp
@pytest.mark.slow
def test_llamacpp_answers_the_bundled_model_as_the_engine_does_under_greedy_decoding():
    from tunelab.catalog import DEFAULT_MODEL
    from tunelab.providers.local.provider import LocalProvider

    options = ChatOptions(max_tokens=24)
    llama = LlamaCppBackend("llamacpp").model_for(DEFAULT_MODEL)
    assert llama is not None
    engine = LocalProvider()
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        expected = engine.chat(DEFAULT_MODEL, messages, max_tokens=24)
        answer = llama.answer(messages, options)
        assert answer.text == expected.text, prompt
        assert answer.finish_reason == expected.finish_reason
        assert answer.usage == expected.usage
