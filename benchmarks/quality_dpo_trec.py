"""Benchmark: TREC classification by the shipped SFT recipe's model, before and after DPO on
its own mistakes.

The SFT model is `quality_trec.py`'s: its data (`prepare_data`, short prompt, HELD_OUT
questions held out) and its recipe (`FULL`, or `QUICK` with --quick), trained by its
`fine_tune`. That model then answers POOL of the questions it was trained on, by label
scoring, in a recorded `classify` evaluation run; each question it gets wrong becomes a
preference pair (gold label preferred, its answer not), as `tunelab format --to preference
--from-eval RUN_ID` makes them (`evals.preference_pairs.pairs_from_run`). The pairs never
come from the held-out questions. DPO (beta BETA, LoRA, its base learning rate) trains on
them from the SFT model, for at most DPO_MINUTES; both models are then evaluated on the
held-out questions in one recorded run: accuracy (Wilson interval), macro-F1 and the paired
comparison (bootstrap interval, McNemar's exact test).

    python benchmarks/quality_dpo_trec.py              # or: make bench
    python benchmarks/quality_dpo_trec.py --quick      # a few steps and items, nothing recorded
    python benchmarks/quality_dpo_trec.py --no-record  # full run, RESULTS.md left alone
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from functools import partial
from pathlib import Path

from _common import cpu_snapshot, other_work, record
from quality_trec import (
    FULL,
    QUICK,
    SEED,
    append_json,
    budget_for,
    comparison_sentence,
    context_sentence,
    fine_tune,
    machine,
    parse_args,
    prepare_data,
    quiet_start,
    recipe_settings,
    recorded_run,
    settings_sentence,
    training_sentence,
)

POOL = 1500  # trained-on questions the SFT model answers; its mistakes become the pairs
QUICK_POOL = 32
BETA = 0.1
DPO_BATCH_SIZE = 8
DPO_EPOCHS = 2
DPO_MINUTES = 10


def classify_run(path: Path, models: list[str], limit: int | None, what: str) -> dict:
    """`tunelab eval classify` by label scoring on `path`, recorded; the run as a dict."""
    from tunelab.evals.classify import evaluate_classification
    from tunelab.evals.items import load_items

    items = load_items(path, limit=limit)
    options = {"benchmark": "quality_dpo_trec", "evaluated": what}
    scoring = partial(evaluate_classification, method="score")
    return recorded_run("classify", items, models, options, scoring, what=f" ({what})")


def preference_pairs(train: Path, sft: Path, pool: int, out: Path) -> dict:
    """The SFT model's mistakes on `pool` of its training questions, as preference pairs."""
    from tunelab.evals.preference_pairs import pairs_from_run, write_pairs

    run = classify_run(train, [str(sft)], pool, "trained-on questions, for the pairs")
    made = pairs_from_run(run["id"])
    write_pairs(out, made.pairs)
    print(f"pairs: {len(made.pairs)} of {made.n_answers} answers ({made.n_wrong} wrong)")
    return {"run": run["id"], "n_pairs": len(made.pairs), "n_answers": made.n_answers}


def dpo_settings(quick: bool) -> dict:
    return {
        "training_method": "dpo",
        "dpo_beta": BETA,
        "batch_size": 2 if quick else DPO_BATCH_SIZE,
        "n_epochs": 1 if quick else DPO_EPOCHS,
        "max_steps": 2 if quick else "auto",
        "seed": SEED,
    }


def markdown(data: dict, pairs: dict, result: dict, runs: dict, context: dict) -> str:
    sft_dir, dpo_dir = result["models_order"]
    names = {sft_dir: "SFT recipe (quality_trec)", dpo_dir: "SFT + tunelab DPO"}
    lines = [
        f"## quality: TREC classification, SFT recipe before and after DPO on its mistakes "
        f"— {date.today()}",
        "",
        f"Machine: {context['machine']}.",
        "",
        f"Data: {data['source']} (short prompt); {result['data']['n_items']} held-out "
        f"questions (stratified split, seed {SEED}), {data['n_train']} trained on. SFT: "
        + settings_sentence(runs["sft"], context["budget"])
        + f" Pairs: the SFT model's wrong answers (label scoring) on {pairs['n_answers']} of "
        f"its training questions (eval run `{pairs['run']}`): {pairs['n_pairs']} pairs, gold "
        f"preferred. DPO: beta {BETA}, batch {runs['dpo']['recipe']['batch_size']}, "
        f"{runs['dpo']['steps']} steps, lr {runs['dpo']['recipe']['learning_rate']:.1e}. "
        f"Evaluation: `evaluate_classification` by label scoring, both models in eval run "
        f"`{result['id']}`.",
        "",
        "| model | accuracy (95% Wilson interval) | macro-F1 | evaluation time |",
        "| --- | ---: | ---: | ---: |",
    ]
    for model, figures in result["models"].items():
        low, high = figures["accuracy_ci"]
        lines.append(
            f"| {names[model]} | {figures['accuracy']:.1%} ({low:.1%}–{high:.1%}) | "
            f"{figures['macro_f1']:.3f} | {figures['seconds']:.0f} s |"
        )
    lines += [
        "",
        comparison_sentence(result["comparisons"][0], "accuracy").replace("base", "SFT"),
        "",
        "SFT " + training_sentence(runs["sft"], context["budget"]),
        "",
        "DPO "
        + training_sentence(runs["dpo"], context["budget"])
        + " "
        + context_sentence(context),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv, __doc__)
    budget = budget_for(args, FULL, QUICK)
    quiet, load_before = quiet_start(args)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-dpo-trec-") as tmp:
        tmp = Path(tmp)
        data = prepare_data(tmp, budget, budget.template)
        before = cpu_snapshot([os.getpid()])
        sft, sft_dir = fine_tune(data["train"], tmp / "sft", budget, recipe_settings(args, budget))
        pool = QUICK_POOL if args.quick else POOL
        pairs = preference_pairs(data["train"], sft_dir, pool, tmp / "pairs.jsonl")
        dpo_budget = replace(budget, cancel_after_s=DPO_MINUTES * 60)
        dpo, dpo_dir = fine_tune(
            tmp / "pairs.jsonl", tmp / "dpo", dpo_budget, dpo_settings(args.quick), start=sft_dir
        )
        models = [str(sft_dir), str(dpo_dir)]
        result = classify_run(data["held_out"], models, budget.max_items, "held-out questions")
        result["models_order"] = models
        busy = other_work(before, cpu_snapshot([os.getpid()]))
        context = machine(budget, quiet, load_before, busy)
        section = markdown(data, pairs, result, {"sft": sft, "dpo": dpo}, context)
    append_json(
        args.json_out,
        {
            "benchmark": "quality_dpo_trec",
            "date": str(date.today()),
            "sft": sft,
            "dpo": dpo,
            "pairs": pairs,
            "models": list(result["models"].values()),
            "other_work": busy,
        },
    )
    record(section, args, busy)


if __name__ == "__main__":
    main(sys.argv[1:])
