"""Local training: LoRA and full fine-tuning of causal language models on chat data.

`load_base` turns a model name or path into a `transformers` model and tokenizer; `train`
takes them with a `TrainConfig` and chat examples; `engine.generate`'s `generate` and
`stream_chat` answer chats in batches; `export_model` writes a trained model as a standard
Hugging Face directory. The engine knows nothing of the CLI, providers or the registry.
"""

import importlib

# Attribute -> submodule. Loaded on first use (PEP 562), so that `tunelab.engine.config`
# and the light CLI commands do not pay for torch, transformers and peft (seconds) up front.
# `generate` is both a function and its module's name: import the function from
# `tunelab.engine.generate` (the package attribute `generate` is the module once it loads).
_EXPORTS = {
    "ResolvedConfig": "config",
    "TrainConfig": "config",
    "field_help": "config",
    "read_chat_jsonl": "dataset",
    "tokenize_examples": "dataset",
    "export_model": "export",
    "ChatStream": "generate",
    "stream_chat": "generate",
    "ModelInfo": "sources",
    "load_base": "models",
    "load_trained": "models",
    "resolve_model_source": "sources",
    "TrainResult": "trainer",
    "plan": "trainer",
    "train": "trainer",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tunelab.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tunelab.engine.{module}"), name)


__all__ = [
    "ChatStream",
    "ModelInfo",
    "ResolvedConfig",
    "TrainConfig",
    "TrainResult",
    "export_model",
    "field_help",
    "load_base",
    "load_trained",
    "plan",
    "read_chat_jsonl",
    "resolve_model_source",
    "stream_chat",
    "tokenize_examples",
    "train",
]
