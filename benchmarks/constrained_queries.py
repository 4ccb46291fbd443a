"""Benchmark: `eval queries --constrain schema` against unconstrained decoding, on DocSpider.

The data and the fine-tuning are `quality_docspider.py`'s (the same split, budget and
recipe): SmolLM2 fine-tuned with LoRA, then its answers to the held-out questions scored
twice in the same run: free (the baseline) and decoded under the query grammar limited to
each item's schema context (`--constrain schema`). Figures: parse failures, exact and
structural match of each, and the time each took. What the grammar should give: 0% parse
failures, and exact and structural match at least as high as unconstrained.

    python benchmarks/constrained_queries.py            # full run, appended to RESULTS.md
    python benchmarks/constrained_queries.py --quick    # a few steps and items, nothing recorded
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _common import cpu_snapshot, other_work, record
from quality_docspider import FULL, MAX_NEW_TOKENS, QUICK, prepare_data
from quality_trec import (
    budget_for,
    fine_tune,
    machine,
    parse_args,
    print_progress,
    quiet_start,
    recipe_settings,
)

MODES = ("off", "schema")


def evaluate(held_out_path: Path, tuned: Path, max_items: int | None) -> dict[str, dict]:
    """The fine-tuned model's figures on the held-out items, for each `--constrain` mode."""
    from tunelab.evals.items import load_items
    from tunelab.evals.mongo.task import evaluate_queries

    held_out = load_items(held_out_path, limit=max_items)
    figures = {}
    for mode in MODES:
        result = evaluate_queries(
            held_out,
            [str(tuned)],
            progress=print_progress,
            max_tokens=MAX_NEW_TOKENS,
            constrain=mode,
        )
        figures[mode] = result.models[str(tuned)]
    return figures


def markdown(figures: dict[str, dict], n_train: int, context: dict) -> str:
    free, constrained = figures["off"], figures["schema"]
    rows = [
        "| decoding | parse failures | exact | structural | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for mode, name in (("off", "free (baseline)"), ("schema", "`--constrain schema`")):
        m = figures[mode]
        rows.append(
            f"| {name} | {m['parse_failure_rate']:.1%} | {m['exact_match']:.1%} "
            f"| {m['structural_match']:.3f} | {m['seconds']} |"
        )
    ratio = constrained["seconds"] / free["seconds"] if free["seconds"] else float("nan")
    return (
        f"\n## constrained_queries.py ({context['machine']})\n\n"
        f"SmolLM2-135M fine-tuned on {n_train} DocSpider questions (quality_docspider.py's "
        f"recipe), {free['n']} held-out questions answered free and under the query grammar "
        f"limited to each item's schema; constrained time / free time: {ratio:.2f}. "
        f"Quiet: {context['quiet']}; other work {context['other_work']:.0%}.\n\n"
        + "\n".join(rows)
        + "\n"
    )


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv, __doc__)
    budget = budget_for(args, FULL, QUICK)
    settings = recipe_settings(args, budget)
    quiet, load_before = quiet_start(args)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-constrained-") as tmp:
        data = prepare_data(Path(tmp), budget)
        before = cpu_snapshot([os.getpid()])
        _, trained_dir = fine_tune(data["train"], Path(tmp) / "run", budget, settings)
        figures = evaluate(data["held_out"], trained_dir, budget.max_items)
        busy = other_work(before, cpu_snapshot([os.getpid()]))
        context = machine(budget, quiet, load_before, busy)
    record(markdown(figures, data["n_train"], context), args, busy)


if __name__ == "__main__":
    main(sys.argv[1:])
