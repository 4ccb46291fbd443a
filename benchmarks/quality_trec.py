"""Benchmark: TREC question classification by SmolLM2, before and after a tunelab LoRA run.

Data: TREC's training questions (`../shared/datasets/trec/train.tsv`, else the bundled
sample) formatted as chat by `format_dataset`, whose stratified split (seed fixed) holds out
about HELD_OUT questions; at most MAX_TRAIN of the others are trained on. Training uses
tunelab's `auto` hyperparameters except the batch size and `max_steps` (chosen to fit the
time budget on a quiet machine), and is cancelled after CANCEL_AFTER_S seconds of wall time
in any case: it then stops within one step and its last checkpoint is evaluated, so that
training stays within TRAIN_BUDGET_S.

Both models answer the held-out questions with the prompt `format_dataset` wrote (system and
user message), by batched greedy generation; `ClassificationPrompt.parse_answer` reads the
label, and an answer that is no valid label counts as wrong (the invalid rate is reported).
The majority class of the training questions is the floor to beat.

    python benchmarks/quality_trec.py        # or: make bench
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path

from _common import (
    REPO,
    SHARED_DATASETS,
    append_results,
    cpu_seconds,
    describe_machine,
    load_average,
    wait_until_quiet,
)

MODEL = "smollm2-135m-instruct"
TREC = SHARED_DATASETS / "trec" / "train.tsv"
TREC_SAMPLE = REPO / "src" / "tunelab" / "resources" / "samples" / "trec_sample.tsv"
HELD_OUT = 300
MAX_TRAIN = 1000
BATCH_SIZE = 16
MAX_STEPS = 120
TRAIN_BUDGET_S = 600
# Room for the step in progress and the checkpoint after a cancellation.
CANCEL_AFTER_S = 540
SEED = 42
# "<category>DESC</category>" and the end-of-turn token take 9; a rambling answer is wrong
# whatever follows.
MAX_NEW_TOKENS = 16


def prepare_data(directory: Path) -> dict:
    """Training and held-out chat JSONL files, and what they hold."""
    from tunelab.data.formatter import format_dataset

    source = TREC if TREC.exists() else TREC_SAMPLE
    n_rows = sum(1 for _ in source.open(encoding="utf-8")) - 1  # minus the header
    train_all, held_out = directory / "train_all.jsonl", directory / "held_out.jsonl"
    report = format_dataset(
        source, train_all, held_out, train_ratio=max(0.5, 1 - HELD_OUT / n_rows), seed=SEED
    )
    train = directory / "train.jsonl"
    # The split shuffled the training file, so its head is a random sample of it.
    lines = train_all.read_text(encoding="utf-8").splitlines(keepends=True)[:MAX_TRAIN]
    train.write_text("".join(lines), encoding="utf-8")
    return {
        "source": "`../shared/datasets/trec/train.tsv`" if source == TREC else "the bundled sample",
        "train": train,
        "held_out": held_out,
        "n_train": len(lines),
        "n_held_out": report.n_val,
        "labels": sorted(report.label_counts["train"]),
    }


def answers(path: Path, labels: list[str]) -> tuple[list[list[dict]], list[str]]:
    """The prompts (every message before the answer) and the expected labels."""
    from tunelab.data.prompts import ClassificationPrompt
    from tunelab.engine import read_chat_jsonl

    prompt, prompts, expected = ClassificationPrompt(), [], []
    for example in read_chat_jsonl(path):
        messages = list(example.messages)
        prompts.append(messages[:-1])
        expected.append(prompt.parse_answer(messages[-1]["content"], labels))
    return prompts, expected


def accuracy(model, tokenizer, path: Path, labels: list[str]) -> dict:
    """Accuracy and invalid-answer rate of greedy answers to `path`'s questions."""
    from tunelab.data.prompts import ClassificationPrompt
    from tunelab.engine.generate import generate

    prompt = ClassificationPrompt()
    prompts, expected = answers(path, labels)
    start = time.perf_counter()
    completions = generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS)
    seconds = time.perf_counter() - start
    predicted = [prompt.parse_answer(c.text, labels) for c in completions]
    n = len(expected)
    return {
        "accuracy": sum(p == e for p, e in zip(predicted, expected, strict=True)) / n,
        "invalid": sum(p is None for p in predicted) / n,
        "n": n,
        "seconds": seconds,
        "examples": [c.text for c in completions[:3]],
    }


def fine_tune(train_path: Path, out_dir: Path) -> tuple[dict, Path]:
    """Train within the budget; returns the figures and the directory to load the model from."""
    from tunelab.engine import TrainConfig, train
    from tunelab.engine.config import resolve_precision
    from tunelab.engine.models import load_base

    model, tokenizer, _ = load_base(MODEL)
    config = TrainConfig(batch_size=BATCH_SIZE, max_steps=MAX_STEPS, seed=SEED)
    cancel = threading.Event()
    timer = threading.Timer(CANCEL_AFTER_S, cancel.set)
    records: list[dict] = []
    cpu_start, start = cpu_seconds(), time.perf_counter()
    timer.start()
    try:
        result = train(
            model, tokenizer, train_path, None, config, out_dir, base_model=MODEL,
            callback=records.append, cancel=cancel,
        )  # fmt: skip
    finally:
        timer.cancel()
    figures = {
        "status": result.status,
        "steps": result.step,
        "epochs": result.step * BATCH_SIZE / result.dataset["train"]["n_examples"],
        "seconds": time.perf_counter() - start,
        "cpu_seconds": cpu_seconds() - cpu_start,
        "tokens_per_second": result.tokens_per_second,
        "first_loss": records[0]["loss"],
        "last_loss": sum(r["loss"] for r in records[-5:]) / len(records[-5:]),
        "tokens": result.dataset["train"]["total_tokens"],
        "learning_rate": max(r["learning_rate"] for r in records),
        "precision": resolve_precision("auto"),
    }
    return figures, out_dir if result.status == "succeeded" else result.last_checkpoint


def markdown(data: dict, base: dict, tuned: dict, training: dict, context: dict) -> str:
    majority_label, majority = context["majority"]
    cores_busy = training["cpu_seconds"] / training["seconds"]
    lines = [
        f"## quality: TREC classification, SmolLM2-135M base vs tunelab LoRA — {date.today()}",
        "",
        f"Machine: {context['machine']}.",
        "",
        f"Data: {data['source']} formatted by `format_dataset` (6 coarse labels, default "
        f"classification prompt); {data['n_held_out']} questions held out by its stratified "
        f"split (seed {SEED}), {data['n_train']} of the rest trained on. Training: LoRA with "
        f"tunelab's auto settings (r=16, alpha=32, all linear layers of the blocks, peak lr "
        f"{training['learning_rate']:.0e}, cosine, precision {training['precision']}), batch "
        f"{BATCH_SIZE}, max_steps {MAX_STEPS}, cancelled at {CANCEL_AFTER_S} s if still "
        f"running. Evaluation: batched greedy generation (at most {MAX_NEW_TOKENS} new tokens), "
        "`ClassificationPrompt.parse_answer`; answers that are no valid label count as wrong.",
        "",
        "| model | accuracy | invalid answers | evaluation time |",
        "| --- | ---: | ---: | ---: |",
        f"| majority class ({majority_label}) | {majority:.1%} | | |",
    ]
    for name, figures in (("SmolLM2-135M-Instruct (base)", base), ("+ tunelab LoRA", tuned)):
        lines.append(
            f"| {name} | {figures['accuracy']:.1%} | {figures['invalid']:.1%} | "
            f"{figures['seconds']:.0f} s |"
        )
    lines += [
        "",
        f"Training: {training['status']} after {training['steps']} steps "
        f"({training['epochs']:.2f} epochs), {training['seconds']:.0f} s wall, "
        f"{training['cpu_seconds']:.0f} CPU-seconds ({cores_busy:.2f} of {os.cpu_count()} "
        f"cores busy on average), {training['tokens_per_second']:,.0f} "
        f"tokens/s (non-padding, engine's own count), loss {training['first_loss']:.2f} → "
        f"{training['last_loss']:.2f} (mean of the last 5 steps). Before the run the machine was "
        f"{context['quiet']}; load average {context['load_before']}. First base answers: "
        + "; ".join(f"`{text!r}`" for text in base["examples"])
        + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    from tunelab.engine.models import load_base, load_trained

    quiet = wait_until_quiet()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-trec-") as tmp:
        data = prepare_data(Path(tmp))
        _, train_labels = answers(data["train"], data["labels"])
        _, held_out_labels = answers(data["held_out"], data["labels"])
        label, _ = Counter(train_labels).most_common(1)[0]
        majority = held_out_labels.count(label) / len(held_out_labels)
        model, tokenizer, _ = load_base(MODEL)
        base = accuracy(model, tokenizer, data["held_out"], data["labels"])
        print(f"base: {base['accuracy']:.1%} ({base['invalid']:.1%} invalid)", flush=True)
        training, trained_dir = fine_tune(data["train"], Path(tmp) / "run")
        print(f"trained: {training}", flush=True)
        model, tokenizer, _ = load_trained(trained_dir)
        tuned = accuracy(model, tokenizer, data["held_out"], data["labels"])
        print(f"fine-tuned: {tuned['accuracy']:.1%} ({tuned['invalid']:.1%} invalid)", flush=True)
    import torch
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    context = {
        "machine": describe_machine(versions),
        "majority": (label, majority),
        "load_before": load_before,
        "quiet": quiet,
    }
    section = markdown(data, base, tuned, training, context)
    print(section)
    append_results(section)


if __name__ == "__main__":
    main()
