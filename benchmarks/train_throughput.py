"""Benchmark: tunelab's training engine against TRL's `SFTTrainer` (LoRA on SmolLM2, CPU).

Same base model (`load_base("smollm2-135m-instruct")`: the dequantized Hugging Face directory
both sides load), same data (TREC questions formatted as chat by `format_dataset`, the first
BATCH_SIZE * (WARMUP_STEPS + MEASURED_STEPS) training examples: one epoch, every example seen
once by each side), same LoRA (rank, alpha, dropout, the 7 projections of every block), same
batch size, learning rate and schedule (linear decay from 2e-4, no warm-up), loss on
assistant tokens only. Everything else is each side's default: tunelab's `auto` precision
(bf16 autocast where the CPU multiplies bf16 faster, timed where it is not known, frozen
weights stored in bf16; fp32 elsewhere), its
length bucketing and its once-per-batch computation of the prompt every row starts with (the
system prompt and the label list here), and TRL's `SFTConfig` defaults (bf16=True,
gradient_checkpointing=True, padding, no packing, AdamW). Tokens per second count the
dataset's tokens on both sides, however each side computes them.

TRL cannot patch SmolLM2's ChatML template for `assistant_only_loss` (it knows no training
variant of it), so its tokenizer gets the same template with `{% generation %}` markers around
each answer and its `<|im_end|>`: it renders the same text (checked), and the trained tokens
are the ones tunelab trains (counts checked).

Each side runs in its own process and reports: non-padding tokens per second over the
MEASURED_STEPS optimizer steps after the first (warm-up) step, timed from the end of step 1 to
the end of the last step; its peak RSS (ru_maxrss); its training loss; and the mean
assistant-token loss of the trained model on EVAL_EXAMPLES held-out examples, computed by the
same function for both (the comparable loss: the two sides batch the examples differently, so
their last-step losses are on different examples). Model FLOPs utilisation uses 4N FLOPs per
token (N: the base model's parameters) against the best matmul rate (bf16 or fp32) measured here.

    python benchmarks/train_throughput.py        # or: make bench
    python benchmarks/train_throughput.py --packing on   # tunelab with sequence packing
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from _common import (
    LORA_ALPHA,
    LORA_DROPOUT,
    LORA_RANK,
    LORA_TARGETS,
    TUNELAB_LORA,
    append_results,
    cpu_seconds,
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
WARMUP_STEPS = 1
MEASURED_STEPS = 20
EVAL_EXAMPLES = 64
LEARNING_RATE = 2e-4
SEED = 42
CHILD_TIMEOUT_S = 900  # a bound for a busy machine; a quiet one needs a third
# A side whose process kept fewer than this fraction of the cores busy during its timed steps
# shared the machine with other work (torch's threads then wait on each other) and is re-run.
CONTENDED_BELOW = 0.85
# SmolLM2's message line (NL: the template's newline, escaped or literal), and the same line
# with the answer and its end-of-turn token marked for TRL's assistant-only loss.
CHATML_MESSAGE = (
    "{{'<|im_start|>' + message['role'] + 'NL' + message['content'] + '<|im_end|>' + 'NL'}}"
)
CHATML_MESSAGE_MARKED = (
    "{% if message['role'] == 'assistant' %}{{'<|im_start|>assistantNL'}}{% generation %}"
    "{{message['content'] + '<|im_end|>'}}{% endgeneration %}{{'NL'}}"
    "{% else %}" + CHATML_MESSAGE + "{% endif %}"
)


# ----- data ---------------------------------------------------------------------------------


def prepare_data(directory: Path) -> tuple[Path, Path, str]:
    """The training slice and the held-out slice as chat JSONL, and where they came from."""
    from tunelab.data.formatter import format_dataset

    source, where = trec_source()
    train, val = directory / "trec_train.jsonl", directory / "trec_val.jsonl"
    format_dataset(source, train, val, train_ratio=0.8, seed=SEED)
    n_train = BATCH_SIZE * (WARMUP_STEPS + MEASURED_STEPS)
    bench_train, bench_eval = directory / "bench_train.jsonl", directory / "bench_eval.jsonl"
    _write_head(train, bench_train, n_train)
    _write_head(val, bench_eval, EVAL_EXAMPLES)
    return bench_train, bench_eval, where


def _write_head(source: Path, target: Path, n: int) -> None:
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    if len(lines) < n:
        raise RuntimeError(f"{source} has {len(lines)} examples; the benchmark needs {n}")
    target.write_text("".join(lines[:n]), encoding="utf-8")


# ----- one side per process -------------------------------------------------------------------


def eval_loss(model, tokenizer, path: Path) -> float:
    """Mean cross-entropy over the assistant tokens of `path`'s examples (bf16 autocast).

    The labels are tunelab's (checked equal to TRL's on the training data); the computation is
    the plain one, one example at a time so that the full-vocabulary logits stay small and do
    not set the process's peak memory.
    """
    import torch
    import torch.nn.functional as F

    from tunelab.engine import read_chat_jsonl, tokenize_examples

    examples = tokenize_examples(read_chat_jsonl(path), tokenizer, 2048).examples
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for example in examples:
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0, :-1]
            targets = torch.tensor(example.labels[1:])
            total += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
            count += int((targets != -100).sum())
    return total / count


def run_tunelab(train_path: Path, eval_path: Path, out_dir: Path, packing: str = "off") -> dict:
    from tunelab.engine import TrainConfig, train
    from tunelab.engine.config import resolve_precision
    from tunelab.engine.models import load_base

    model, tokenizer, _ = load_base(MODEL)
    rss_loaded = peak_rss_mb()
    base_loss = eval_loss(model, tokenizer, eval_path)
    config = TrainConfig(
        **TUNELAB_LORA,
        n_epochs=1,
        batch_size=BATCH_SIZE,
        learning_rate=LEARNING_RATE,
        lr_scheduler="linear",
        warmup_steps=0,
        seed=SEED,
        packing=packing,
    )
    records: list[dict] = []

    def record(step) -> None:  # a StepRecord
        records.append({**step.as_metrics(), "cpu": cpu_seconds(), "wall": time.perf_counter()})

    cpu_start = cpu_seconds()
    result = train(model, tokenizer, train_path, None, config, out_dir, callback=record)
    # `elapsed` is stamped as each step's update ends, before its logging and checkpoint.
    measured = records[WARMUP_STEPS:]
    seconds = measured[-1]["elapsed"] - records[WARMUP_STEPS - 1]["elapsed"]
    peak = peak_rss_mb()
    return {
        "side": "tunelab",
        "packing": packing,
        "precision": resolve_precision("auto", "cpu"),
        "steps": len(records),
        "tokens": sum(r["tokens"] for r in measured),
        "seconds": seconds,
        "train_cpu_seconds": cpu_seconds() - cpu_start,
        "cores_busy": _cores_busy([(r["wall"], r["cpu"]) for r in records]),
        "losses": [r["loss"] for r in records],
        "total_tokens": result.dataset["train"]["total_tokens"],
        "trained_tokens": result.dataset["train"]["trained_tokens"],
        "base_eval_loss": base_loss,
        "eval_loss": eval_loss(model, tokenizer, eval_path),
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak,
    }


def run_trl(train_path: Path, eval_path: Path, out_dir: Path) -> dict:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    from tunelab.engine import read_chat_jsonl
    from tunelab.engine.models import load_base

    model, tokenizer, _ = load_base(MODEL)
    rss_loaded = peak_rss_mb()
    conversations = [list(example.messages) for example in read_chat_jsonl(train_path)]
    tokenizer.chat_template = marked_template(tokenizer, conversations)
    step_ends: list[tuple[float, float]] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append((time.perf_counter(), cpu_seconds()))

    args = trl.SFTConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=BATCH_SIZE,
        num_train_epochs=1,
        learning_rate=LEARNING_RATE,
        assistant_only_loss=True,
        # Required on a machine without a GPU: with TRL's default bf16=True, transformers
        # otherwise refuses ("Your setup doesn't support bf16/gpu. You need to assign use_cpu").
        use_cpu=True,
        logging_steps=1,  # a loss and a token count per step
        save_strategy="no",
        report_to="none",
        seed=SEED,
        disable_tqdm=True,
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"messages": c} for c in conversations]),
        processing_class=tokenizer,
        peft_config=trl_lora(),
        callbacks=[StepTimes()],
    )
    cpu_start = cpu_seconds()
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "num_tokens" in entry]
    peak = peak_rss_mb()
    processed = trainer.train_dataset
    return {
        "side": "trl",
        "precision": "bf16" if args.bf16 else ("fp16" if args.fp16 else "fp32"),
        "defaults": {
            "bf16": args.bf16,
            "gradient_checkpointing": args.gradient_checkpointing,
            "packing": args.packing,
            "padding_free": args.padding_free,
            "optim": str(args.optim),
            "max_length": args.max_length,
        },
        "steps": len(step_ends),
        "tokens": int(logs[-1]["num_tokens"] - logs[WARMUP_STEPS - 1]["num_tokens"]),
        "seconds": step_ends[-1][0] - step_ends[WARMUP_STEPS - 1][0],
        "train_cpu_seconds": cpu_seconds() - cpu_start,
        "cores_busy": _cores_busy(step_ends),
        "losses": [entry["loss"] for entry in logs],
        "total_tokens": sum(len(ids) for ids in processed["input_ids"]),
        "trained_tokens": sum(sum(t != -100 for t in row) for row in processed["labels"]),
        "eval_loss": eval_loss(trainer.model, tokenizer, eval_path),
        "rss_loaded_mb": rss_loaded,
        "peak_rss_mb": peak,
        "version": trl.__version__,
    }


def _cores_busy(stamps: list[tuple[float, float]]) -> float:
    """CPU seconds per wall second over the timed steps: below the core count, others ran."""
    (wall_0, cpu_0), (wall_1, cpu_1) = stamps[WARMUP_STEPS - 1], stamps[-1]
    return (cpu_1 - cpu_0) / (wall_1 - wall_0)


def marked_template(tokenizer, conversations: list[list[dict]]) -> str:
    """SmolLM2's template with `{% generation %}` markers; refuses if it renders differently."""
    original = tokenizer.chat_template
    for newline in ("\\n", "\n"):
        message = CHATML_MESSAGE.replace("NL", newline)
        if message in original:
            marked = original.replace(message, CHATML_MESSAGE_MARKED.replace("NL", newline))
            break
    else:
        raise RuntimeError("the base model's chat template is not SmolLM2's ChatML template")
    for conversation in conversations:
        plain = tokenizer.apply_chat_template(conversation, tokenize=False)
        if tokenizer.apply_chat_template(conversation, tokenize=False, chat_template=marked) != (
            plain
        ):
            raise RuntimeError("the marked template renders a conversation differently")
    return marked


def measure_in_child(
    side: str, train_path: str, eval_path: str, out_dir: str, packing: str
) -> dict:
    if side == "tunelab":
        return run_tunelab(Path(train_path), Path(eval_path), Path(out_dir), packing)
    return run_trl(Path(train_path), Path(eval_path), Path(out_dir))


def measure_quietly(side: str, train_path: Path, eval_path: Path, tmp: Path) -> dict:
    """One side's figures, measured again once if other work took CPU during its timed steps."""
    attempts = []
    for attempt in range(2):
        before = {"quiet": wait_until_quiet(), "load_before": load_average()}
        out_dir = tmp / f"{side}-{attempt}"
        arguments = [str(train_path), str(eval_path), str(out_dir), PACKING[0]]
        attempts.append({**run_child(__file__, side, arguments, CHILD_TIMEOUT_S), **before})
        if attempts[-1]["cores_busy"] >= CONTENDED_BELOW * (os.cpu_count() or 1):
            break
        print(f"{side}: other work took CPU during the timed steps; measuring again", flush=True)
    best = max(attempts, key=lambda figures: figures["tokens"] / figures["seconds"])
    return {**best, "attempts": len(attempts)}


# ----- reference FLOP/s and the report --------------------------------------------------------


def peak_matmul_flops() -> tuple[float, str]:
    """The best matmul rate this machine reaches with torch's threads, bf16 or fp32 (the MFU
    reference): with AMX bf16 is several times faster; with AVX512-BF16 alone, either."""
    import torch

    best, how = 0.0, ""
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        for size in (1024, 2048, 3072):
            a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
            a @ b
            for _ in range(4):
                start = time.perf_counter()
                for _ in range(3):
                    a @ b
                rate = 3 * 2 * size**3 / (time.perf_counter() - start)
                if rate > best:
                    best, how = rate, f"{name} {size}x{size} matmul"
    return best, f"{how}, {torch.get_num_threads()} threads"


def summarize(side: dict, n_parameters: int, peak_flops: float) -> dict:
    rate = side["tokens"] / side["seconds"]
    last = side["losses"][-5:]
    return {
        "tokens_per_second": rate,
        "mfu": rate * 4 * n_parameters / peak_flops,
        "last_losses": sum(last) / len(last),
    }


def markdown(ours: dict, theirs: dict, context: dict) -> str:
    a, b = summarize(ours, **context["mfu"]), summarize(theirs, **context["mfu"])
    ratio = a["tokens_per_second"] / b["tokens_per_second"]
    defaults = ", ".join(f"{k}={v}" for k, v in theirs["defaults"].items())
    rows = [
        ("dataset tokens/s (non-padding)", "{:,.0f}", "tokens_per_second", a, b),
        ("model FLOPs utilisation", "{:.1%}", "mfu", a, b),
    ]
    lines = [
        f"## train: tunelab vs TRL SFTTrainer (LoRA, SmolLM2-135M, CPU) — {date.today()}",
        "",
        f"Machine: {context['machine']}.",
        "",
        f"Data: {context['source']} formatted as chat by `format_dataset`; the first "
        f"{ours['steps'] * BATCH_SIZE} training examples ({ours['total_tokens']:,} tokens, "
        f"{ours['trained_tokens']:,} assistant tokens; TRL's tokenization: "
        f"{theirs['total_tokens']:,} / {theirs['trained_tokens']:,}), one epoch, batch "
        f"{BATCH_SIZE}, {ours['steps']} steps: the first is warm-up, the next "
        f"{MEASURED_STEPS} are timed. LoRA r={LORA_RANK}, alpha={LORA_ALPHA}, dropout="
        f"{LORA_DROPOUT} on {', '.join(LORA_TARGETS)}; lr {LEARNING_RATE} linear to 0, no "
        f"warm-up. tunelab precision: {ours['precision']}, packing {ours['packing']}. "
        f"TRL {theirs['version']} "
        f"`SFTConfig` defaults: {defaults}; `assistant_only_loss=True` with SmolLM2's template "
        "given `{% generation %}` markers (same rendering). Each side in its own process.",
        "",
        "| | tunelab | TRL SFTTrainer | tunelab / TRL |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, fmt, key, x, y in rows:
        lines.append(
            f"| {label} | {fmt.format(x[key])} | {fmt.format(y[key])} | {x[key] / y[key]:.2f}x |"
        )
    lines += [
        f"| peak RSS (ru_maxrss) | {ours['peak_rss_mb']:,.0f} MB | "
        f"{theirs['peak_rss_mb']:,.0f} MB | {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x |",
        f"| RSS with the model loaded, before training | {ours['rss_loaded_mb']:,.0f} MB | "
        f"{theirs['rss_loaded_mb']:,.0f} MB | |",
        f"| held-out assistant-token loss after training ({EVAL_EXAMPLES} examples; "
        f"base model: {ours['base_eval_loss']:.3f}) | {ours['eval_loss']:.3f} | "
        f"{theirs['eval_loss']:.3f} | |",
        f"| training loss, mean of the last 5 steps | {a['last_losses']:.3f} | "
        f"{b['last_losses']:.3f} | |",
        f"| CPU seconds in train() | {ours['train_cpu_seconds']:.0f} | "
        f"{theirs['train_cpu_seconds']:.0f} | |",
        f"| cores busy during the timed steps (CPU s / wall s) | {ours['cores_busy']:.2f} | "
        f"{theirs['cores_busy']:.2f} | |",
        f"| process wall time (load, tokenize, train, evaluate) | {ours['wall_seconds']:.0f} s | "
        f"{theirs['wall_seconds']:.0f} s | |",
        "",
        f"Speed-up {ratio:.2f}x (target ≥ 3x). MFU: 4N FLOPs per token, N = "
        f"{context['mfu']['n_parameters']:,} base parameters (attention score FLOPs not "
        f"counted), against {context['mfu']['peak_flops'] / 1e12:.2f} TFLOP/s, the best "
        f"{context['peak_how']} measured in this run. Before the tunelab run the machine was "
        f"{ours['quiet']}, load average {ours['load_before']}; before the TRL run "
        f"{theirs['quiet']}, load average {theirs['load_before']}. Runs per side (a side is "
        f"run again once when other work took CPU during its timed steps; the faster run "
        f"counts): tunelab {ours['attempts']}, TRL {theirs['attempts']}.",
    ]
    return "\n".join(lines)


PACKING = ["off"]  # tunelab's --packing for this run (set by main from its flag)


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--packing",
        choices=("on", "off"),
        default="off",
        help="tunelab's sequence packing (TRL keeps its default, off)",
    )
    PACKING[0] = parser.parse_args(list(argv)).packing
    from tunelab.engine.models import load_base

    with tempfile.TemporaryDirectory(prefix="tunelab-bench-train-") as tmp:
        tmp = Path(tmp)
        train_path, eval_path, source = prepare_data(tmp)
        model, _, _ = load_base(MODEL)  # converts the bundled model once, before timing
        n_parameters = sum(p.numel() for p in model.parameters())
        del model
        wait_until_quiet()
        peak_flops, peak_how = peak_matmul_flops()
        print(f"reference: {peak_flops / 1e12:.2f} TFLOP/s ({peak_how})", flush=True)
        sides = {}
        for side in ("tunelab", "trl"):
            sides[side] = measure_quietly(side, train_path, eval_path, tmp)
            figures = sides[side]
            print(
                f"{side}: {figures['tokens'] / figures['seconds']:,.0f} tokens/s, peak RSS "
                f"{figures['peak_rss_mb']:,.0f} MB, eval loss {figures['eval_loss']:.3f}, "
                f"{figures['wall_seconds']:.0f} s",
                flush=True,
            )
    import peft

    versions = torch_versions(f"peft {peft.__version__}", f"trl {sides['trl']['version']}")
    context = {
        "machine": describe_machine(versions),
        "source": source,
        "peak_how": peak_how,
        "mfu": {"n_parameters": n_parameters, "peak_flops": peak_flops},
    }
    section = markdown(sides["tunelab"], sides["trl"], context)
    print(section)
    append_results(section)


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        print(json.dumps(measure_in_child(*sys.argv[2:7])))
    else:
        main(sys.argv[1:])
