"""Benchmark: tunelab's DPO against TRL's `DPOTrainer` (LoRA on SmolLM2, CPU).

Same base model (the bundled SmolLM2-135M-Instruct, loaded by `load_base` on both sides), same
preference pairs (TREC questions formatted as chat by `format_dataset`: the gold label is
preferred, the next label in the sorted label list is not), same LoRA (rank, alpha, dropout,
the 7 projections of every block), batch size, learning rate, schedule (linear to 0, no
warm-up) and beta, DPO's sigmoid loss on both; the reference is the base with the adapter
switched off on both. Everything else is each side's default (tunelab's `auto` precision and
shared-prefix batches; TRL's `DPOConfig` defaults, with `use_cpu=True`).

Each side runs one epoch over the same pairs in its own process and reports: tokens per
second (both answers' rows, prompt included, counted by tunelab's tokenization for both
sides) from the end of the first (warm-up) step to the end of the last, its loss curve and
reward accuracy per step, and its peak RSS (ru_maxrss).

    python benchmarks/dpo_throughput.py        # or: make bench
    python benchmarks/dpo_throughput.py --steps 3   # a quick check that both sides run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from _common import (
    LORA_ALPHA,
    LORA_RANK,
    LORA_TARGETS,
    TUNELAB_LORA,
    append_results,
    describe_machine,
    load_average,
    peak_rss_mb,
    run_child,
    torch_versions,
    trec_source,
    trl_lora,
    wait_until_quiet,
)

MODEL = "smollm2-135m-instruct"
BATCH_SIZE = 8
STEPS = 16  # the first is warm-up
LEARNING_RATE = 5e-5
BETA = 0.1
SEED = 42
CHILD_TIMEOUT_S = 1800


def write_pairs(directory: Path, n_pairs: int) -> tuple[Path, str]:
    """`n_pairs` TREC preference pairs (gold preferred over another label) as OpenAI's
    preference JSONL, and where the questions came from."""
    from tunelab.data.formatter import format_dataset
    from tunelab.data.preference import preference_pair
    from tunelab.engine import read_chat_jsonl

    source, where = trec_source()
    chat = directory / "trec_train.jsonl"
    format_dataset(source, chat, directory / "trec_val.jsonl", train_ratio=0.9, seed=SEED)
    examples = read_chat_jsonl(chat)[:n_pairs]
    labels = sorted({example.messages[-1]["content"] for example in examples})
    pairs = []
    for example in examples:
        gold = example.messages[-1]["content"]
        wrong = labels[(labels.index(gold) + 1) % len(labels)]
        pairs.append(preference_pair(list(example.messages[:-1]), gold, wrong))
    path = directory / "pairs.jsonl"
    path.write_bytes(b"".join(pair.to_json_line() for pair in pairs))
    return path, where


def pair_tokens(path: Path, tokenizer) -> list[int]:
    """Each pair's tokens (both rows, prompt included) as tunelab tokenizes them."""
    from tunelab.data.preference import read_preference_file
    from tunelab.engine.preference import tokenize_pairs

    return tokenize_pairs(read_preference_file(path), tokenizer, 2048).lengths


def run_tunelab(pairs: Path, out_dir: Path) -> dict:
    from tunelab.engine import TrainConfig, train
    from tunelab.engine.config import resolve_precision
    from tunelab.engine.models import load_base

    model, tokenizer, _ = load_base(MODEL)
    config = TrainConfig(
        training_method="dpo",
        dpo_beta=BETA,
        **TUNELAB_LORA,
        n_epochs=1,
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        lr_scheduler="linear",
        warmup_steps=0,
        seed=SEED,
    )
    records: list[dict] = []
    train(
        model,
        tokenizer,
        pairs,
        None,
        config,
        out_dir,
        callback=lambda r: records.append({**r.as_metrics(), "wall": time.perf_counter()}),
    )
    return {
        "side": "tunelab",
        "precision": resolve_precision("auto", "cpu"),
        "step_ends": [r["wall"] for r in records],
        "losses": [r["loss"] for r in records],
        "accuracies": [r["preference_accuracy"] for r in records],
        "peak_rss_mb": peak_rss_mb(),
    }


def run_trl(pairs: Path, out_dir: Path) -> dict:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    from tunelab.data.preference import read_preference_file
    from tunelab.engine.models import load_base

    model, tokenizer, _ = load_base(MODEL)
    rows = [
        {
            "prompt": list(pair.messages),
            "chosen": list(pair.preferred),
            "rejected": list(pair.non_preferred),
        }
        for pair in read_preference_file(pairs)
    ]
    step_ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    args = trl.DPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=BATCH_SIZE,
        num_train_epochs=1,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        beta=BETA,
        loss_type=["sigmoid"],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=SEED,
        disable_tqdm=True,
    )
    trainer = trl.DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=trl_lora(),
        callbacks=[StepTimes()],
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {
        "side": "trl",
        "precision": "bf16" if args.bf16 else ("fp16" if args.fp16 else "fp32"),
        "step_ends": step_ends,
        "losses": [entry["loss"] for entry in logs],
        "accuracies": [entry.get("rewards/accuracies") for entry in logs],
        "peak_rss_mb": peak_rss_mb(),
        "version": trl.__version__,
    }


def rate(side: dict, tokens_per_step: list[int]) -> float:
    """Tokens per second from the end of step 1 to the end of the last step."""
    ends = side["step_ends"]
    return sum(tokens_per_step[1 : len(ends)]) / (ends[-1] - ends[0])


def markdown(ours: dict, theirs: dict, context: dict) -> str:
    tokens = context["tokens_per_step"]
    a, b = rate(ours, tokens), rate(theirs, tokens)

    def curve(values: list) -> str:
        return ", ".join("—" if v is None else f"{v:.3f}" for v in values)

    return "\n".join(
        [
            f"## dpo: tunelab vs TRL DPOTrainer (LoRA, SmolLM2-135M, CPU) — {date.today()}",
            "",
            f"Machine: {context['machine']}.",
            "",
            f"Data: {context['steps'] * BATCH_SIZE} preference pairs from {context['source']} "
            f"(gold label preferred over the next label), {context['total_tokens']:,} tokens "
            f"in both answers' rows; batch {BATCH_SIZE}, {context['steps']} steps (the first "
            f"is warm-up); LoRA r={LORA_RANK}, alpha={LORA_ALPHA} on {', '.join(LORA_TARGETS)}; "
            f"lr {LEARNING_RATE} linear to 0; beta {BETA}, sigmoid loss; tunelab precision "
            f"{ours['precision']}, TRL {theirs['version']} `DPOConfig` defaults "
            f"(precision {theirs['precision']}). Each side in its own process; the machine "
            f"was {context['quiet']} (load {context['load']}) before the runs.",
            "",
            "| | tunelab | TRL DPOTrainer | tunelab / TRL |",
            "| --- | ---: | ---: | ---: |",
            f"| tokens/s after the first step | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |",
            f"| peak RSS (ru_maxrss) | {ours['peak_rss_mb']:,.0f} MB | "
            f"{theirs['peak_rss_mb']:,.0f} MB | "
            f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x |",
            f"| process wall time | {ours['wall_seconds']:.0f} s | "
            f"{theirs['wall_seconds']:.0f} s | |",
            "",
            f"Loss per step, tunelab: {curve(ours['losses'])}",
            "",
            f"Loss per step, TRL: {curve(theirs['losses'])}",
            "",
            f"Reward accuracy per step, tunelab: {curve(ours['accuracies'])}",
            "",
            f"Reward accuracy per step, TRL: {curve(theirs['accuracies'])}",
            "",
            f"Speed-up {a / b:.2f}x (target ≥ 2x). The two sides see the pairs in different "
            "orders (tunelab groups by length), so their per-step losses are on different "
            "batches; both start at log 2 = 0.693.",
        ]
    )


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=STEPS, help="steps (pairs / batch size)")
    steps = parser.parse_args(list(argv)).steps
    from tunelab.engine.models import load_base

    with tempfile.TemporaryDirectory(prefix="tunelab-bench-dpo-") as tmp:
        tmp = Path(tmp)
        pairs, source = write_pairs(tmp, steps * BATCH_SIZE)
        _, tokenizer, _ = load_base(MODEL)  # converts the bundled model once, before timing
        lengths = pair_tokens(pairs, tokenizer)
        # Both sides take the pairs in batches of BATCH_SIZE; a step's tokens are its pairs'
        # (equal steps in an epoch: per-step counts are the epoch's mean).
        mean_step = sum(lengths) / steps
        quiet, load = wait_until_quiet(), load_average()
        sides = {
            side: run_child(__file__, side, [str(pairs), str(tmp / side)], CHILD_TIMEOUT_S)
            for side in ("tunelab", "trl")
        }
    import peft

    versions = torch_versions(f"peft {peft.__version__}", f"trl {sides['trl']['version']}")
    context = {
        "machine": describe_machine(versions),
        "source": source,
        "steps": steps,
        "total_tokens": sum(lengths),
        "tokens_per_step": [mean_step] * steps,
        "quiet": quiet,
        "load": load,
    }
    section = markdown(sides["tunelab"], sides["trl"], context)
    print(section)
    append_results(section)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        side, pairs, out_dir = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
        run = run_tunelab if side == "tunelab" else run_trl
        print(json.dumps(run(pairs, out_dir)))
    else:
        main(sys.argv[1:])
