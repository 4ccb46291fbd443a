"""Benchmark: NL → MongoDB (DocSpider) by SmolLM2, before and after a tunelab LoRA run.

Data: DocSpider's question → query pairs (`../shared/datasets/docspider/train.json`, with its
`collections.json` as schema context when present; else the bundled sample and its
collections) formatted as chat by `format_dataset` with `context_field="db_id"`: each prompt
lists the collections and fields of the question's database. Its split (seed fixed) holds out
about HELD_OUT questions, drawn at random, so the same databases occur in training (an
in-domain evaluation); at most FULL.max_train of the others are trained on. Training as in
`quality_trec.py`: tunelab's `auto` hyperparameters except the budget's batch size,
`max_steps` and settings (lr 1e-3, no LoRA dropout, batches grouped by database:
`--group-by-prompt on`), cancelled after `cancel_after_s` seconds (20 minutes) in any case.

Evaluation is tunelab's own, as `tunelab eval queries` runs it: `load_items` on the held-out
chat JSONL, `evaluate_queries` for the base model (the baseline) and the fine-tuned one in the
same run, recorded by `record_run` (registry, result.json, report.html). Figures: parse
failure rate, exact match after normalisation (with its Wilson interval), structural match
(with a bootstrap interval), and the paired comparison of exact matches (difference with a
bootstrap interval, McNemar's exact test). Execution match stays empty: DocSpider ships no
documents to run the queries on.

    python benchmarks/quality_docspider.py              # or: make bench
    python benchmarks/quality_docspider.py --quick      # a few steps and items, nothing recorded
    python benchmarks/quality_docspider.py --no-record  # full run, RESULTS.md left alone
    python benchmarks/quality_docspider.py --minutes 20 --set method=full \\
        --set learning_rate=5e-5 --json-out sweep.jsonl   # one recipe of a sweep
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import date
from functools import partial
from pathlib import Path

from _common import REPO, SHARED_DATASETS, cpu_snapshot, other_work, record
from quality_trec import (
    MODEL,
    SEED,
    Budget,
    append_json,
    budget_for,
    comparison_sentence,
    context_sentence,
    fine_tune,
    head_lines,
    machine,
    parse_args,
    quiet_start,
    recipe_settings,
    recorded_run,
    row_name,
    settings_sentence,
    training_sentence,
)

DOCSPIDER = SHARED_DATASETS / "docspider"
SAMPLES = REPO / "src" / "tunelab" / "resources" / "samples"
HELD_OUT = 200
# 97% of the held-out gold queries fit in 160 SmolLM2 tokens; a base model that rambles on
# costs every extra token in each batch it is in.
MAX_NEW_TOKENS = 160
# About 240 tokens an example, ~150 of them its database's schema. Batches of one database's
# questions (group_by_prompt) compute the schema once per batch; with bf16 where the CPU is
# faster in it and no LoRA dropout (20-35% of a LoRA step's time), and each database's
# questions sorted by length into its batches, a step of 8 took 4.7 s on average over a run
# on a 2-core AMD EPYC (258 steps in 20 minutes, 0.54 epochs; 300 planned, so the cosine
# schedule is nearly done when time runs out). lr 1e-3 did better than 5e-4 (RESULTS.md,
# 2026-12-02).
FULL = Budget(
    max_train=4000,
    max_items=None,
    batch_size=8,
    max_steps=300,
    cancel_after_s=1200,
    settings=(("learning_rate", 1e-3), ("group_by_prompt", "on"), ("lora_dropout", 0.0)),
)
QUICK = Budget(
    max_train=32, max_items=8, batch_size=4, max_steps=3, cancel_after_s=300, settings=FULL.settings
)


def sources() -> tuple[Path, Path | None, str]:
    """The DocSpider file, its schema context (None: none), and how to describe them."""
    train, collections = DOCSPIDER / "train.json", DOCSPIDER / "collections.json"
    if not train.exists():
        return (
            SAMPLES / "docspider_sample.json",
            SAMPLES / "docspider_collections.json",
            "the bundled sample (`docspider_sample.json`, schema context from "
            "`docspider_collections.json`)",
        )
    where = "`../shared/datasets/docspider/train.json`"
    if collections.exists():
        return train, collections, f"{where} with `collections.json` as schema context"
    return train, None, f"{where} (no `collections.json` there: prompts without schema context)"


def prepare_data(directory: Path, budget: Budget) -> dict:
    """Training and held-out chat JSONL files, and what they hold."""
    from tunelab.data.formatter import format_dataset
    from tunelab.data.sources import SourceOptions

    source, context, where = sources()
    n_records = len(json.loads(source.read_text(encoding="utf-8")))
    options = SourceOptions(context_field="db_id", context_file=context) if context else None
    train_all, held_out = directory / "train_all.jsonl", directory / "held_out.jsonl"
    report = format_dataset(
        source,
        train_all,
        held_out,
        options=options,
        train_ratio=max(0.5, 1 - HELD_OUT / n_records),
        seed=SEED,
    )
    train = directory / "train.jsonl"
    # The split shuffled the training file, so its head is a random sample of it.
    n_train = head_lines(train_all, train, budget.max_train)
    print(f"data: {where}; {report.n_val} held out, {n_train} trained on", flush=True)
    return {
        "source": where,
        "train": train,
        "held_out": held_out,
        "n_train": n_train,
        "n_duplicates": report.n_duplicates,
    }


def evaluate(data: dict, tuned: Path, budget: Budget) -> dict:
    """Base vs fine-tuned on the held-out questions, recorded as a tunelab evaluation run."""
    from tunelab.evals.items import load_items
    from tunelab.evals.mongo.task import evaluate_queries

    held_out = load_items(data["held_out"], limit=budget.max_items)
    models = [MODEL, str(tuned)]
    options = {
        "benchmark": "quality_docspider",
        "quick": budget.max_steps == QUICK.max_steps,
        "max_new_tokens": MAX_NEW_TOKENS,
        "fine_tuned": "LoRA output in a temporary directory, deleted after the run",
    }
    answering = partial(evaluate_queries, max_tokens=MAX_NEW_TOKENS)
    result = recorded_run("queries", held_out, models, options, answering)
    result.update(paired_figures(held_out, result["json_path"], models))
    return result


def paired_figures(held_out, json_path: str, models: list[str]) -> dict:
    """Intervals and the comparison of `models` (the first against the second), over the items
    whose gold query parses, and the first model's first answers."""
    import numpy as np

    from tunelab.evals.metrics import bootstrap_ci, paired_comparison, wilson_interval
    from tunelab.evals.mongo.task import GoldQueries

    outputs = json.loads(Path(json_path).read_text(encoding="utf-8"))["outputs"]
    scored = [i for i, gold in enumerate(GoldQueries(held_out, None).parsed) if gold is not None]
    intervals = {}
    for model in models:
        rows = [outputs[model][i] for i in scored]
        structural = np.array([row["structural"] for row in rows], dtype=float)
        intervals[model] = {
            "exact_ci": wilson_interval(sum(row["exact"] for row in rows), len(rows)),
            "structural_ci": bootstrap_ci(structural, np.mean),
        }
    exact = [[outputs[model][i]["exact"] for i in scored] for model in models]
    return {
        "intervals": intervals,
        "comparison": paired_comparison(*exact),
        "first_answers": [row["answer"] for row in outputs[models[0]][:3]],
    }


def markdown(data: dict, result: dict, training: dict, context: dict) -> str:
    budget = context["budget"]
    n_unparsable = result["models"][MODEL]["n_gold_unparsable"]
    scored = (
        f"items whose gold query parses ({n_unparsable} does not)"
        if n_unparsable
        else "items (every gold query parses)"
    )
    lines = [
        f"## quality: DocSpider NL→MongoDB, SmolLM2-135M base vs tunelab "
        f"{training['recipe']['method']} fine-tuning — {date.today()}",
        "",
        f"Machine: {context['machine']}.",
        "",
        f'Data: {data["source"]}, formatted by `format_dataset` (`context_field="db_id"`; '
        f"{data['n_duplicates']} exact duplicates dropped); {result['data']['n_items']} "
        f"held-out questions (random split, seed {SEED}: their databases also occur in "
        f"training) evaluated, {data['n_train']} of the rest trained on. "
        + settings_sentence(training, budget)
        + f" Evaluation: tunelab's `evaluate_queries` through `record_run` (eval run "
        f"`{result['id']}`), base and fine-tuned in the same run, greedy, at most "
        f"{MAX_NEW_TOKENS} new tokens. Exact and structural match are over the {scored}. "
        "Execution match: not measured, DocSpider ships no documents to run the queries on.",
        "",
        "| model | parse failures | exact match (95% Wilson interval) | structural match "
        "(95% bootstrap interval) | execution match | evaluation time |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, figures in result["models"].items():
        exact, structural = result["intervals"][model].values()
        lines.append(
            f"| {row_name(model, training)} | {figures['parse_failure_rate']:.1%} | "
            f"{figures['exact_match']:.1%} ({exact[0]:.1%}–{exact[1]:.1%}) | "
            f"{figures['structural_match']:.3f} ({structural[0]:.3f}–{structural[1]:.3f}) | "
            f"n/a (no documents) | {figures['seconds']:.0f} s |"
        )
    lines += [
        "",
        comparison_sentence(result["comparison"], "exact match"),
        "",
        training_sentence(training, budget)
        + " "
        + context_sentence(context)
        + " First base answers: "
        + "; ".join(f"`{text[:120]!r}`" for text in result["first_answers"])
        + ".",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv, __doc__)
    budget = budget_for(args, FULL, QUICK)
    settings = recipe_settings(args, budget)
    quiet, load_before = quiet_start(args)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-docspider-") as tmp:
        data = prepare_data(Path(tmp), budget)
        before = cpu_snapshot([os.getpid()])
        training, trained_dir = fine_tune(data["train"], Path(tmp) / "run", budget, settings)
        result = evaluate(data, trained_dir, budget)
        busy = other_work(before, cpu_snapshot([os.getpid()]))
        section = markdown(data, result, training, machine(budget, quiet, load_before, busy))
    append_json(
        args.json_out,
        {
            "benchmark": "quality_docspider",
            "date": str(date.today()),
            "training": training,
            "models": result["models"],
            "other_work": busy,
            "budget": budget,
        },
    )
    print("Execution match is null: DocSpider ships no documents to run the queries on.")
    record(section, args, busy)


if __name__ == "__main__":
    main(sys.argv[1:])
