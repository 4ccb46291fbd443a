"""Local training: LoRA and full fine-tuning of causal language models on chat data.

`load_base` turns a model name or path into a `transformers` model and tokenizer; `train`
takes them with a `TrainConfig` and chat examples; `generate`/`stream_chat` answer chats in
batches; `export_model` writes a trained model as a standard Hugging Face directory. The
engine knows nothing of the CLI, providers or the registry.
"""

from tunelab.engine.config import ResolvedConfig, TrainConfig, field_help
from tunelab.engine.dataset import read_chat_jsonl, tokenize_examples
from tunelab.engine.export import export_model
from tunelab.engine.generate import ChatStream, Completion, generate, stream_chat
from tunelab.engine.models import ModelInfo, load_base, load_trained, resolve_model_source
from tunelab.engine.trainer import TrainResult, plan, read_throughput, train

__all__ = [
    "ChatStream",
    "Completion",
    "ModelInfo",
    "ResolvedConfig",
    "TrainConfig",
    "TrainResult",
    "export_model",
    "field_help",
    "generate",
    "load_base",
    "load_trained",
    "plan",
    "read_chat_jsonl",
    "read_throughput",
    "resolve_model_source",
    "stream_chat",
    "tokenize_examples",
    "train",
]
