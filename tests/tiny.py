"""Tiny models for tests: a random 2-layer Llama and a ChatML tokenizer built at test time.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on the test sentences, with
SmolLM2's special tokens and chat template. Importable from any test (`from tiny import ...`).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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


def build_tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [f"system user assistant You are a helpful assistant. {q} {a}" for q, a in QUESTIONS]
    bpe.train_from_iterator(corpus * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


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
