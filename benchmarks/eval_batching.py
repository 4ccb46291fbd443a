"""Benchmark: batched greedy generation with the prefix cache against one question at a time
(SmolLM2, CPU), and label scoring against generation.

What evaluation runs: QUESTIONS TREC questions (`../shared/datasets/trec/train.tsv`, else the
bundled sample; the first rows of the file) with the prompt `tunelab format` writes for a
classification table (`read_classification`: its default system prompt, and
`ClassificationPrompt.user_message` listing the file's sorted labels), answered by the bundled
SmolLM2 through the engine's `generate`, greedy, at most MAX_NEW_TOKENS new tokens: with
`batch_size=BATCH_SIZE` and the shared prefix's KV cache (tunelab), without the prefix cache,
in bf16 autocast (to see whether it pays and what it changes), and with `batch_size=1` and
no prefix cache (the baseline: one question at a time, KV cache and all). Same process, same
loaded model, all warmed up first. Greedy answers must not depend on the batch or the prefix
cache: mismatches against the baseline are counted (target: ≥ 8x with none). Label scoring,
`eval classify`'s default, is timed over the same prompts, and its labels compared with
those read from the batched generation.

    python benchmarks/eval_batching.py              # or: make bench
    python benchmarks/eval_batching.py --quick      # fewer questions, nothing recorded
    python benchmarks/eval_batching.py --no-record  # full run, RESULTS.md left alone
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import date
from itertools import islice

from _common import (
    cpu_snapshot,
    describe_machine,
    load_average,
    other_work,
    record,
    recording_parser,
    torch_versions,
    trec_source,
    wait_until_quiet,
)
from tunelab.evals.classify import MAX_TOKENS as CLASSIFY_MAX_TOKENS
from tunelab.providers.local.answering import BATCH_SIZE as LOCAL_BATCH_SIZE

MODEL = "smollm2-135m-instruct"
QUESTIONS, QUICK_QUESTIONS = 200, 48
# What `tunelab eval` uses for local models.
BATCH_SIZE = LOCAL_BATCH_SIZE
# What `tunelab eval classify` allows an answer (a label, its tags and some slack).
MAX_NEW_TOKENS = CLASSIFY_MAX_TOKENS


def questions(n: int) -> tuple[list[list[dict]], str, list[str]]:
    """The first `n` questions as `tunelab format` prompts them, where they came from, and
    the labels."""
    from tunelab.data.sources.tables import read_classification

    source, where = trec_source()
    reading = read_classification(source)
    prompts = [list(example.messages[:-1]) for example in islice(reading.examples, n)]
    if len(prompts) < n:
        raise RuntimeError(f"{source} has {len(prompts)} questions; the benchmark needs {n}")
    return prompts, f"{where} ({len(reading.labels)} labels)", sorted(reading.labels)


def timed(run) -> dict:
    """`run()`'s result, the wall time and the CPU others took meanwhile."""
    before = cpu_snapshot([os.getpid()])
    result = run()
    after = cpu_snapshot([os.getpid()])
    return {
        "result": result,
        "seconds": after[0] - before[0],
        "other_work": other_work(before, after),
    }


def timed_generate(
    model, tokenizer, prompts, batch_size: int, prefix_cache: bool, bf16: bool = False
) -> dict:
    """Greedy answers with `batch_size` (and the prefix cache or not), timed."""
    import torch

    from tunelab.engine.generate import generate

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return generate(
                model,
                tokenizer,
                prompts,
                max_new_tokens=MAX_NEW_TOKENS,
                batch_size=batch_size,
                prefix_cache=prefix_cache,
            )

    figures = timed(run)
    figures["completions"] = figures.pop("result")
    figures["tokens"] = sum(c.completion_tokens for c in figures["completions"])
    return figures


def timed_scoring(model, tokenizer, prompts, labels: list[str]) -> dict:
    """Label scoring (what `eval classify` runs by default) over the same prompts, timed."""
    from tunelab.data.prompts import ClassificationPrompt
    from tunelab.engine.score import best_answer, score_answers

    answers = [ClassificationPrompt().answer(label) for label in labels]

    def run():
        scores = score_answers(model, tokenizer, prompts, answers, batch_size=BATCH_SIZE)
        return [labels[best_answer(row)] for row in scores]

    figures = timed(run)
    figures["labels"] = figures.pop("result")
    return figures


def mismatches(runs: dict, reference: dict) -> int:
    pairs = zip(runs["completions"], reference["completions"], strict=True)
    return sum(a.text != b.text or a.finish_reason != b.finish_reason for a, b in pairs)


def markdown(runs: dict[str, dict], scoring: dict, context: dict) -> str:
    single = runs["one by one (batch_size=1, no prefix cache)"]
    n = len(single["completions"])
    lines = [
        f"## eval batching: batched + prefix cache vs one-by-one greedy generation, and label "
        f"scoring (SmolLM2-135M) — {date.today()}",
        "",
        f"Machine: {context['machine']}.",
        "",
        f"Data: the first {n} questions of {context['source']}, prompted as `tunelab format` "
        f"writes a classification table (default system prompt, `ClassificationPrompt`); "
        f"prompts of {context['prompt_tokens']} tokens on average, of which "
        f"{context['shared_tokens']} are shared by every prompt (the prefix cache). The "
        f"engine's `generate`, greedy, at most {MAX_NEW_TOKENS} new tokens, on "
        f"{context['device']}; same process and loaded model, all warmed up. Answers are "
        "compared with the one-by-one fp32 run.",
        "",
        "| | wall time | questions/s | speed-up | answers differing | other work on the CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, run in runs.items():
        lines.append(
            f"| {label} | {run['seconds']:.1f} s | {n / run['seconds']:.2f} | "
            f"{single['seconds'] / run['seconds']:.2f}x | {mismatches(run, single)} of {n} | "
            f"{run['other_work']:.0%} |"
        )
    lines += [
        f"| label scoring (`eval classify` default), batch {BATCH_SIZE} | "
        f"{scoring['seconds']:.1f} s | {n / scoring['seconds']:.2f} | "
        f"{single['seconds'] / scoring['seconds']:.2f}x | — | {scoring['other_work']:.0%} |",
        "",
        f"Target: batched ≥ 8x one by one with identical answers. Label scoring against "
        f"generation (batched, fp32): {context['agree']} of {n} items get the same label; "
        f"{context['invalid']} generated answers are no valid label (scoring has none by "
        f"construction). Before timing the machine was {context['quiet']}; load average "
        f"{context['load_before']}.",
    ]
    return "\n".join(lines)


def run_all(model, tokenizer, prompts) -> dict[str, dict]:
    """Each way of generating, timed; the baseline last."""
    runs = {}
    for label, batch_size, prefix, bf16 in (
        (f"batch_size={BATCH_SIZE} + prefix cache (tunelab)", BATCH_SIZE, True, False),
        (f"batch_size={BATCH_SIZE}, no prefix cache", BATCH_SIZE, False, False),
        (f"batch_size={BATCH_SIZE} + prefix cache, bf16 autocast", BATCH_SIZE, True, True),
        ("one by one (batch_size=1, no prefix cache)", 1, False, False),
    ):
        runs[label] = timed_generate(model, tokenizer, prompts, batch_size, prefix, bf16)
        print(f"{label}: {runs[label]['seconds']:.1f} s", flush=True)
    return runs


def main(argv: Sequence[str] = ()) -> None:
    args = recording_parser(__doc__, "fewer questions; not recorded").parse_args(list(argv))

    from tunelab.data.prompts import ClassificationPrompt
    from tunelab.engine.generate import encode_chat, generate, shared_prefix_length
    from tunelab.engine.models import load_base

    prompts, source, labels = questions(QUICK_QUESTIONS if args.quick else QUESTIONS)
    model, tokenizer, _ = load_base(MODEL)
    encoded = [encode_chat(tokenizer, p) for p in prompts]
    generate(model, tokenizer, prompts[:BATCH_SIZE], max_new_tokens=MAX_NEW_TOKENS)  # warm-up
    generate(model, tokenizer, prompts[:2], max_new_tokens=MAX_NEW_TOKENS, batch_size=1)
    quiet, load_before = wait_until_quiet(), load_average()
    runs = run_all(model, tokenizer, prompts)
    scoring = timed_scoring(model, tokenizer, prompts, labels)
    print(f"label scoring: {scoring['seconds']:.1f} s", flush=True)
    batched = runs[f"batch_size={BATCH_SIZE} + prefix cache (tunelab)"]
    generated = [
        ClassificationPrompt().parse_answer(c.text, labels) for c in batched["completions"]
    ]

    context = {
        "machine": describe_machine(torch_versions()),
        "source": source,
        "prompt_tokens": f"{sum(map(len, encoded)) / len(encoded):.0f}",
        "shared_tokens": shared_prefix_length(encoded),
        "device": next(model.parameters()).device,
        "agree": sum(g == s for g, s in zip(generated, scoring["labels"], strict=True)),
        "invalid": sum(g is None for g in generated),
        "quiet": quiet,
        "load_before": load_before,
    }
    section = markdown(runs, scoring, context)
    busy = max([r["other_work"] for r in runs.values()] + [scoring["other_work"]])
    record(section, args, busy)


if __name__ == "__main__":
    main(sys.argv[1:])
