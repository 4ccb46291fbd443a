"""Local training: LoRA and full fine-tuning of causal language models on chat data.

The engine takes an already loaded `transformers` model and tokenizer, a `TrainConfig` and
chat examples; it knows nothing of the CLI, providers or the registry.
"""

from tunelab.engine.config import ResolvedConfig, TrainConfig, field_help
from tunelab.engine.dataset import read_chat_jsonl, tokenize_examples
from tunelab.engine.trainer import TrainResult, plan, read_throughput, train

__all__ = [
    "ResolvedConfig",
    "TrainConfig",
    "TrainResult",
    "field_help",
    "plan",
    "read_chat_jsonl",
    "read_throughput",
    "tokenize_examples",
    "train",
]
