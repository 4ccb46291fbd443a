"""Token counts from a tokenizer's files (no transformers, hence no torch) equal the counts
from the transformers tokenizer: the same rendered text, the same totals and assistant
tokens, the same template refusals, for ChatML and the Llama 3, Qwen3 and Gemma 3 templates."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tiny import build_family_tokenizer, build_tokenizer
from tunelab.data.tokenizer_files import open_tokenizer_files
from tunelab.data.tokens import ChatTemplateCounter

CONVERSATIONS = [
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris"},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4", "weight": 0},
        {"role": "user", "content": "3 + 3?"},
        {"role": "assistant", "content": "Six, é ü 😀"},
    ],
    [{"role": "user", "content": "Hi", "name": "ann"}, {"role": "assistant", "content": "Hello"}],
    [{"role": "assistant", "content": "I speak first"}],  # some templates refuse this
]


@pytest.mark.parametrize("family", ["chatml", "llama3", "qwen3", "gemma3"])
def test_counts_from_the_files_equal_the_transformers_counts(family, tmp_path):
    tokenizer = build_tokenizer() if family == "chatml" else build_family_tokenizer(family)
    tokenizer.save_pretrained(tmp_path)
    files = open_tokenizer_files(tmp_path)
    assert files is not None
    light = ChatTemplateCounter(files, family)
    full = ChatTemplateCounter(AutoTokenizer.from_pretrained(tmp_path), family)
    assert light.special_tokens == full.special_tokens
    assert (light.chatml, light.default_system) == (full.chatml, full.default_system)
    for conversation in CONVERSATIONS:
        a, b = light.count([conversation]), full.count([conversation])
        assert a.failures.keys() == b.failures.keys()
        assert list(a.total) == list(b.total) and list(a.assistant) == list(b.assistant)
        if not a.failures:
            assert light.render(conversation) == full.render(conversation)


def test_a_template_only_transformers_renders_is_left_to_transformers(tmp_path):
    template = (
        "{% for m in messages %}{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}"
    )
    build_tokenizer(chat_template=template).save_pretrained(tmp_path)
    assert open_tokenizer_files(tmp_path) is None
    (tmp_path / "tokenizer.json").unlink()
    assert open_tokenizer_files(tmp_path) is None


def test_a_template_cannot_store_underscore_attributes(tmp_path):
    """The sandbox of transformers' own renderer: a namespace refuses `__class__`-like names."""
    template = "{% set ns = namespace() %}{% set ns.__x = 1 %}{{ messages[0]['content'] }}"
    build_tokenizer(chat_template=template).save_pretrained(tmp_path)
    counter = ChatTemplateCounter(open_tokenizer_files(tmp_path), "hostile")
    counts = counter.count([CONVERSATIONS[0]])
    assert counts.failures and "underscore" in counts.failures[0]
