"""Tiny models for tests: a random 2-layer Llama and a ChatML tokenizer built at test time.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on the test sentences, with
SmolLM2's special tokens and chat template. `FAMILIES` adds Llama-3-, Qwen3- and Gemma-3-shaped
models whose tokenizers carry those families' real special tokens and chat templates (copied
into tests/fixtures/chat_templates). Importable from any test (`from tiny import ...`).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tunelab.engine.steps import StepRecord

# SmolLM2-135M-Instruct's template, with a shorter default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Japan?", "Tokyo"),
    ("Who wrote Hamlet?", "Shakespeare"),
    ("How many legs does a spider have?", "Eight"),
    ("What color is the sky on a clear day?", "Blue"),
    ("What is two plus two?", "Four"),
    ("Which planet is closest to the sun?", "Mercury"),
    ("What do bees make?", "Honey"),
    ("What is frozen water called?", "Ice"),
    ("Which animal says moo?", "A cow says moo."),
]


def build_tokenizer(
    special_tokens: list[str] = SPECIAL_TOKENS,
    chat_template: str = CHATML_TEMPLATE,
    **roles: str | None,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the test sentences; `roles` names its bos/eos/pad tokens
    (default: SmolLM2's)."""
    roles = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        **roles,
    }
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [f"system user assistant You are a helpful assistant. {q} {a}" for q, a in QUESTIONS]
    bpe.train_from_iterator(corpus * 4, trainer)
    roles = {name: token for name, token in roles.items() if token is not None}
    return PreTrainedTokenizerFast(tokenizer_object=bpe, chat_template=chat_template, **roles)


def build_model(tokenizer, seed: int = 0, hidden: int = 64) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        # Larger than the usual 0.02: with a tied 64-wide head, small embeddings cap the logits
        # so low that a frozen-base LoRA could barely lower the loss.
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


class Crash(Exception):
    """A training run dying mid-way (raised from its progress callback)."""


def crash_at_step(step: int):
    """A progress callback that crashes the run when it reports `step`."""

    def callback(update: StepRecord) -> None:
        if update.step == step:
            raise Crash

    return callback


def save_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A tiny model and its tokenizer saved as a Hugging Face directory."""
    tokenizer = build_tokenizer()
    build_model(tokenizer, seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_chat_jsonl(path: Path, pairs=QUESTIONS) -> Path:
    """Chat JSONL with one user question and one assistant answer per line."""
    lines = [
        orjson.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        )
        for q, a in pairs
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def classification_tsv(rows) -> str:
    """A classification table, `(text, label)` rows under a `text\tlabel` header."""
    return "text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows)


TEMPLATES_DIR = Path(__file__).parent / "fixtures" / "chat_templates"


def _small(hidden: int) -> dict:
    return dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,
    )


def _llama3(vocab: int, pad: int | None):
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, pad_token_id=pad, **_small(64)))


def _qwen3(vocab: int, pad: int | None):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=vocab, pad_token_id=pad, head_dim=16, **_small(64))
    return Qwen3ForCausalLM(config)


def _gemma3(vocab: int, pad: int | None):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab, pad_token_id=pad, head_dim=16, sliding_window=64, **_small(64)
    )
    return Gemma3ForCausalLM(config)


# family: (special tokens, bos, eos, pad, template file, model builder). Llama 3 ships no pad
# token: tunelab pads with the EOS.
FAMILIES = {
    "llama3": (
        [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|eom_id|>",
            "<|python_tag|>",
        ],
        "<|begin_of_text|>",
        "<|eot_id|>",
        None,
        "llama3.jinja",
        _llama3,
    ),
    "qwen3": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
        None,
        "<|im_end|>",
        "<|endoftext|>",
        "qwen3.jinja",
        _qwen3,
    ),
    "gemma3": (
        ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<end_of_turn>",
        "<pad>",
        "gemma3.jinja",
        _gemma3,
    ),
}
# What each family's template writes after a trained answer (its end-of-turn token).
END_OF_TURN = {"llama3": "<|eot_id|>", "qwen3": "<|im_end|>", "gemma3": "<end_of_turn>"}


def build_family_tokenizer(family: str) -> PreTrainedTokenizerFast:
    specials, bos, eos, pad, template, _ = FAMILIES[family]
    chat_template = (TEMPLATES_DIR / template).read_text(encoding="utf-8")
    return build_tokenizer(specials, chat_template, bos_token=bos, eos_token=eos, pad_token=pad)


def build_family_model(family: str, tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    return FAMILIES[family][5](len(tokenizer), tokenizer.pad_token_id)


def save_family_model(family: str, directory: Path, seed: int = 0) -> Path:
    """A tiny model of `family` and its tokenizer saved as a Hugging Face directory."""
    tokenizer = build_family_tokenizer(family)
    build_family_model(family, tokenizer, seed).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_adapter(directory: Path, base_dir: Path, seed: int) -> Path:
    """A LoRA training output of the tiny model saved in `base_dir`, its weights random (so
    that each seed answers differently), as `tunelab train` writes one."""
    from peft import LoraConfig, get_peft_model

    tokenizer = build_tokenizer()
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    model = build_model(tokenizer)
    torch.manual_seed(seed)  # after the base, which seeds its own
    get_peft_model(model, config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    summary = {"base_model": str(base_dir), "method": "lora"}
    (directory / "tunelab_config.json").write_bytes(orjson.dumps(summary))
    return directory
