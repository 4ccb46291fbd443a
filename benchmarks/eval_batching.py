"""Benchmark: batched greedy generation against one question at a time (SmolLM2, CPU).

What evaluation runs: QUESTIONS TREC questions (`../shared/datasets/trec/train.tsv`, else the
bundled sample; the first rows of the file) with the prompt `tunelab format` writes for a
classification table (`read_classification`: its default system prompt, and
`ClassificationPrompt.user_message` listing the file's sorted labels), answered by the bundled
SmolLM2 through the engine's `generate`, greedy, at most MAX_NEW_TOKENS new tokens: with
`batch_size=BATCH_SIZE` (tunelab) and with `batch_size=1` (the baseline: one question at a
time, KV cache and all). Same process, same loaded model, both warmed up first. Greedy
answers must not depend on the batch: mismatches are counted.

    python benchmarks/eval_batching.py              # or: make bench
    python benchmarks/eval_batching.py --quick      # fewer questions, nothing recorded
    python benchmarks/eval_batching.py --no-record  # full run, RESULTS.md left alone
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import date
from itertools import islice

from _common import (
    REPO,
    SHARED_DATASETS,
    append_results,
    cpu_snapshot,
    describe_machine,
    load_average,
    other_work,
    wait_until_quiet,
)
from tunelab.evals.candidates import LOCAL_BATCH_SIZE
from tunelab.evals.classify import MAX_TOKENS as CLASSIFY_MAX_TOKENS

MODEL = "smollm2-135m-instruct"
TREC = SHARED_DATASETS / "trec" / "train.tsv"
TREC_SAMPLE = REPO / "src" / "tunelab" / "resources" / "samples" / "trec_sample.tsv"
QUESTIONS, QUICK_QUESTIONS = 200, 48
# What `tunelab eval` uses for local models.
BATCH_SIZE = LOCAL_BATCH_SIZE
# What `tunelab eval classify` allows an answer (a label, its tags and some slack).
MAX_NEW_TOKENS = CLASSIFY_MAX_TOKENS
# Figures taken while other work kept more than this fraction of the CPU busy are printed
# but not recorded: threads waiting on each other make such timings meaningless.
CONTENDED_ABOVE = 0.15


def questions(n: int) -> tuple[list[list[dict]], str]:
    """The first `n` questions as `tunelab format` prompts them, and where they came from."""
    from tunelab.data.sources.tables import read_classification

    source = TREC if TREC.exists() else TREC_SAMPLE
    reading = read_classification(source)
    prompts = [list(example.messages[:-1]) for example in islice(reading.examples, n)]
    if len(prompts) < n:
        raise RuntimeError(f"{source} has {len(prompts)} questions; the benchmark needs {n}")
    where = "`../shared/datasets/trec/train.tsv`" if source == TREC else "the bundled sample"
    return prompts, f"{where} ({len(reading.labels)} labels)"


def timed_generate(model, tokenizer, prompts: list[list[dict]], batch_size: int) -> dict:
    """Greedy answers with `batch_size`, the wall time and the CPU others took meanwhile."""
    from tunelab.engine.generate import generate

    before = cpu_snapshot([os.getpid()])
    completions = generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS,
                           batch_size=batch_size)  # fmt: skip
    after = cpu_snapshot([os.getpid()])
    return {
        "completions": completions,
        "seconds": after[0] - before[0],
        "tokens": sum(c.completion_tokens for c in completions),
        "other_work": other_work(before, after),
    }


def markdown(batched: dict, single: dict, context: dict) -> str:
    n = len(batched["completions"])
    speedup = single["seconds"] / batched["seconds"]
    lines = [
        f"## eval batching: batched vs one-by-one greedy generation (SmolLM2-135M) — "
        f"{date.today()}",
        "",
        f"Machine: {context['machine']}.",
        "",
        f"Data: the first {n} questions of {context['source']}, prompted as `tunelab format` "
        f"writes a classification table (default system prompt, `ClassificationPrompt`); "
        f"prompts of {context['prompt_tokens']} tokens on average. The engine's `generate`, "
        f"greedy, at most {MAX_NEW_TOKENS} new tokens, fp32 on {context['device']}; same "
        "process and loaded model, both warmed up.",
        "",
        "| | wall time | questions/s | generated tokens/s | other work on the CPU |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, run in ((f"batch_size={BATCH_SIZE}", batched), ("batch_size=1", single)):
        lines.append(
            f"| {label} | {run['seconds']:.1f} s | {n / run['seconds']:.2f} | "
            f"{run['tokens'] / run['seconds']:.0f} | {run['other_work']:.0%} |"
        )
    lines += [
        "",
        f"Speed-up {speedup:.2f}x (target ≥ 4x). Answers differing between the two: "
        f"{context['mismatches']} of {n}. Generated tokens: {batched['tokens']:,} batched, "
        f"{single['tokens']:,} one by one. Before timing the machine was {context['quiet']}; "
        f"load average {context['load_before']}.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer questions; not recorded")
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args(list(argv))

    from tunelab.engine.generate import encode_chat, generate
    from tunelab.engine.models import load_base

    prompts, source = questions(QUICK_QUESTIONS if args.quick else QUESTIONS)
    model, tokenizer, _ = load_base(MODEL)
    prompt_tokens = sum(len(encode_chat(tokenizer, p)) for p in prompts) / len(prompts)
    generate(model, tokenizer, prompts[:BATCH_SIZE], max_new_tokens=MAX_NEW_TOKENS)  # warm-up
    generate(model, tokenizer, prompts[:2], max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    quiet, load_before = wait_until_quiet(), load_average()
    batched = timed_generate(model, tokenizer, prompts, BATCH_SIZE)
    print(f"batch_size={BATCH_SIZE}: {batched['seconds']:.1f} s", flush=True)
    single = timed_generate(model, tokenizer, prompts, 1)
    print(f"batch_size=1: {single['seconds']:.1f} s", flush=True)
    pairs = zip(batched["completions"], single["completions"], strict=True)
    mismatches = sum(a.text != b.text or a.finish_reason != b.finish_reason for a, b in pairs)

    import torch
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    context = {
        "machine": describe_machine(versions),
        "source": source,
        "prompt_tokens": f"{prompt_tokens:.0f}",
        "device": next(model.parameters()).device,
        "mismatches": mismatches,
        "quiet": quiet,
        "load_before": load_before,
    }
    section = markdown(batched, single, context)
    print(section)
    contended = max(batched["other_work"], single["other_work"]) > CONTENDED_ABOVE
    if args.quick or args.no_record:
        print("not recorded (--quick or --no-record)")
    elif contended:
        print(f"not recorded: other work took over {CONTENDED_ABOVE:.0%} of the CPU while timing")
    else:
        append_results(section)


if __name__ == "__main__":
    main(sys.argv[1:])
