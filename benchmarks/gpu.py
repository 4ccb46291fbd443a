"""Benchmark: tunelab's training engine on a CUDA GPU (skipped, exit 0, without one).

Trains the bundled SmolLM2-135M and a 1B-class Llama (Llama 3.2 1B's shape with SmolLM2's
tokenizer, random weights: nothing is downloaded) with LoRA and with full fine-tuning, each
for a few steps on synthetic chat examples of 512 tokens, through `tunelab.engine.train` with
every GPU default (`auto` precision: bf16 on Ampere and later; SDPA attention; gradient
checkpointing `auto`). Reports non-padding tokens per second over the STEPS steps (the
engine's own figure), model FLOPs utilisation (4N FLOPs per token for LoRA, 6N for full,
against the GPU's dense bf16 peak from its data sheet) and peak allocated GPU memory;
appends them to RESULTS.md with the date and the device.

    python benchmarks/gpu.py
"""

from __future__ import annotations

import sys
import tempfile
from datetime import date
from pathlib import Path

from _common import append_results

STEPS = 12
BATCH_SIZE = 8
SEQ_TOKENS = 512
# Dense bf16 tensor-core peaks from NVIDIA's data sheets (FLOP/s, without sparsity).
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}
LLAMA_1B = dict(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    rope_theta=500000.0,
)


def peak_flops(device_name: str) -> float | None:
    return next((flops for key, flops in PEAK_BF16.items() if key in device_name), None)


def synthetic_examples(n: int):
    from tunelab.data.example import chat

    sentence = "the quick brown fox jumps over the lazy dog while counting stars "
    answer = (sentence * (SEQ_TOKENS // 20)).strip()
    return [chat(f"Question {i}: repeat the sentence.", answer) for i in range(n)]


def one_billion_dir(tmp: Path) -> Path:
    """Llama 3.2 1B's shape with random weights and SmolLM2's tokenizer, saved once."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunelab.engine.models import load_tokenizer, resolve_model_source

    tokenizer = load_tokenizer(resolve_model_source("smollm2-135m-instruct"))
    config = LlamaConfig(vocab_size=len(tokenizer), **LLAMA_1B)
    torch.manual_seed(0)
    directory = tmp / "llama-1b-random"
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def measure(model_name: str, method: str, tmp: Path) -> dict:
    import torch

    from tunelab.engine import TrainConfig, load_base, train
    from tunelab.engine.trainer import FLOPS_PER_TOKEN

    model, tokenizer, info = load_base(model_name)
    n_parameters = sum(p.numel() for p in model.parameters())
    torch.cuda.reset_peak_memory_stats()
    config = TrainConfig(method=method, batch_size=BATCH_SIZE, max_steps=STEPS, n_epochs=1)
    examples = synthetic_examples(BATCH_SIZE * STEPS)
    result = train(model, tokenizer, examples, None, config, tmp / f"run-{method}-{n_parameters}")
    peak = peak_flops(torch.cuda.get_device_name())
    rate = result.tokens_per_second
    flops = FLOPS_PER_TOKEN[method] * n_parameters * rate
    del model
    torch.cuda.empty_cache()
    return {
        "model": Path(info.name).name,
        "parameters": n_parameters,
        "method": method,
        "tokens_per_second": rate,
        "mfu": flops / peak if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9,
        "loss": result.train_loss,
    }


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU here (benchmarks/gpu.py measures training on a GPU)")
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-gpu-") as tmp:
        tmp = Path(tmp)
        models = ["smollm2-135m-instruct", str(one_billion_dir(tmp))]
        for model_name in models:
            for method in ("lora", "full"):
                row = measure(model_name, method, tmp)
                rows.append(row)
                print(row, flush=True)
    device = torch.cuda.get_device_name()
    lines = [
        f"## GPU training ({date.today().isoformat()}, {device}, torch {torch.__version__})",
        "",
        f"{STEPS} steps of {BATCH_SIZE} examples × ~{SEQ_TOKENS} tokens, `auto` precision.",
        "",
        "| model | parameters | method | tokens/s | MFU | peak memory | final loss |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:,.0f}M | {r['method']} | "
            f"{r['tokens_per_second']:,.0f} | {mfu} | {r['peak_memory_gb']:.1f} GB | "
            f"{r['loss']:.3f} |"
        )
    append_results("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
