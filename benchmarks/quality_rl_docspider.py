"""Benchmark: NL → MongoDB (DocSpider) by the shipped SFT recipe's model, before and after
reinforcement training with the structural-match grader.

The SFT model is `quality_docspider.py`'s: its data (`prepare_data`: schema context, HELD_OUT
questions held out at random) and its recipe (`FULL`, or `QUICK` with --quick), trained by
`quality_trec.fine_tune`. Its training questions then become reinforcement items (the gold
query as `reference_answer`: `item_from_example`), and reinforcement training (GRPO, LoRA on
the SFT model, which is also the KL reference) runs from the SFT model with tunelab's
`mongo_query` grader, metric `structural` (the score `tunelab eval queries` reports as
structural match), as the reward: RL_GROUP_SIZE answers per question, at most
MAX_NEW_TOKENS tokens each, cancelled after RL_MINUTES (20) in any case. Both models are then
evaluated on the held-out questions in one recorded `queries` run (`evaluate_queries`, greedy):
parse failures, exact match (Wilson interval), structural match (bootstrap interval) and the
paired comparison of exact matches.

    python benchmarks/quality_rl_docspider.py              # or: make bench
    python benchmarks/quality_rl_docspider.py --quick      # a few steps and items, not recorded
    python benchmarks/quality_rl_docspider.py --no-record  # full run, RESULTS.md left alone
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from functools import partial
from pathlib import Path

from _common import cpu_snapshot, other_work, record
from quality_docspider import FULL, MAX_NEW_TOKENS, QUICK, paired_figures, prepare_data
from quality_trec import (
    SEED,
    append_json,
    budget_for,
    comparison_sentence,
    context_sentence,
    fine_tune,
    machine,
    parse_args,
    quiet_start,
    recipe_settings,
    recorded_run,
    settings_sentence,
    training_sentence,
)

RL_MINUTES = 20
RL_GROUP_SIZE = 4
RL_BATCH_SIZE = 4  # questions per step
RL_MAX_STEPS = 300  # more than 20 minutes allow on a 2-core CPU: the time budget ends it
GRADER = {
    "type": "mongo_query",
    "name": "structural",
    "metric": "structural",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.reference_answer }}",
}


def write_items(train: Path, out: Path) -> int:
    """The training questions as reinforcement items (gold query as reference); how many."""
    from tunelab.data.reinforcement import item_from_example
    from tunelab.engine import read_chat_jsonl

    items = [item_from_example(example) for example in read_chat_jsonl(train)]
    lines = [item.to_json_line() for item in items if item is not None]
    out.write_bytes(b"".join(lines))
    return len(lines)


def rl_settings(quick: bool) -> dict:
    return {
        "training_method": "reinforcement",
        "rl_group_size": RL_GROUP_SIZE,
        "rl_max_answer_tokens": MAX_NEW_TOKENS,
        "batch_size": 2 if quick else RL_BATCH_SIZE,
        "max_steps": 2 if quick else RL_MAX_STEPS,
        "seed": SEED,
    }


def reinforce(items: Path, sft_dir: Path, out_dir: Path, budget, quick: bool):
    """Reinforcement training from the SFT model, the structural grader as the reward."""
    from tunelab.evals.graders.reward import reward_for

    rl_budget = replace(budget, cancel_after_s=RL_MINUTES * 60)
    training, trained = fine_tune(
        items, out_dir, rl_budget, rl_settings(quick), start=sft_dir, reward=reward_for(GRADER)
    )
    metrics = out_dir / "metrics.jsonl"
    rewards = [json.loads(line).get("reward_mean") for line in metrics.open(encoding="utf-8")]
    training["rewards"] = [r for r in rewards if r is not None]
    return training, trained


def queries_run(held_out: Path, models: list[str], limit: int | None) -> dict:
    """`tunelab eval queries` on the held-out questions for both models, recorded."""
    from tunelab.evals.items import load_items
    from tunelab.evals.mongo.task import evaluate_queries

    items = load_items(held_out, limit=limit)
    options = {"benchmark": "quality_rl_docspider", "max_new_tokens": MAX_NEW_TOKENS}
    answering = partial(evaluate_queries, max_tokens=MAX_NEW_TOKENS)
    result = recorded_run("queries", items, models, options, answering)
    comparison = paired_figures(items, result["json_path"], models)
    return {**result, **comparison, "models_order": models}


def markdown(data: dict, n_items: int, result: dict, runs: dict, context: dict) -> str:
    sft_dir, rl_dir = result["models_order"]
    names = {sft_dir: "SFT recipe (quality_docspider)", rl_dir: "SFT + tunelab reinforcement"}
    rewards = runs["rl"]["rewards"]
    lines = [
        f"## quality: DocSpider NL→MongoDB, SFT recipe before and after reinforcement "
        f"(structural-match grader) — {date.today()}",
        "",
        f"Machine: {context['machine']}.",
        "",
        f"Data: {data['source']}; {result['data']['n_items']} held-out questions (random "
        f"split, seed {SEED}), {data['n_train']} trained on. SFT: "
        + settings_sentence(runs["sft"], context["budget"])
        + f" Reinforcement: {n_items} training questions as items, `mongo_query` grader "
        f"(metric structural) as the reward, {RL_GROUP_SIZE} answers per question, at most "
        f"{MAX_NEW_TOKENS} tokens, batch {runs['rl']['recipe']['batch_size']}, "
        f"{runs['rl']['steps']} steps in at most {RL_MINUTES} minutes, lr "
        f"{runs['rl']['recipe']['learning_rate']:.1e}; mean reward per step "
        f"{rewards[0]:.3f} → {sum(rewards[-5:]) / len(rewards[-5:]):.3f} (first; mean of the "
        f"last 5). Evaluation: `evaluate_queries`, greedy, both models in eval run "
        f"`{result['id']}`.",
        "",
        "| model | parse failures | exact match (95% Wilson interval) | structural match "
        "(95% bootstrap interval) | evaluation time |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for model, figures in result["models"].items():
        exact, structural = result["intervals"][model].values()
        lines.append(
            f"| {names[model]} | {figures['parse_failure_rate']:.1%} | "
            f"{figures['exact_match']:.1%} ({exact[0]:.1%}–{exact[1]:.1%}) | "
            f"{figures['structural_match']:.3f} ({structural[0]:.3f}–{structural[1]:.3f}) | "
            f"{figures['seconds']:.0f} s |"
        )
    lines += [
        "",
        comparison_sentence(result["comparison"], "exact match").replace("base", "SFT"),
        "",
        "SFT " + training_sentence(runs["sft"], context["budget"]),
        "",
        "Reinforcement "
        + training_sentence(runs["rl"], context["budget"])
        + " "
        + context_sentence(context),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv, __doc__)
    budget = budget_for(args, FULL, QUICK)
    quiet, load_before = quiet_start(args)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-rl-docspider-") as tmp:
        tmp = Path(tmp)
        data = prepare_data(tmp, budget)
        before = cpu_snapshot([os.getpid()])
        sft, sft_dir = fine_tune(data["train"], tmp / "sft", budget, recipe_settings(args, budget))
        n_items = write_items(data["train"], tmp / "items.jsonl")
        rl, rl_dir = reinforce(tmp / "items.jsonl", sft_dir, tmp / "rl", budget, args.quick)
        result = queries_run(data["held_out"], [str(sft_dir), str(rl_dir)], budget.max_items)
        busy = other_work(before, cpu_snapshot([os.getpid()]))
        context = machine(budget, quiet, load_before, busy)
        section = markdown(data, n_items, result, {"sft": sft, "rl": rl}, context)
    append_json(
        args.json_out,
        {
            "benchmark": "quality_rl_docspider",
            "date": str(date.today()),
            "sft": sft,
            "reinforcement": rl,
            "models": list(result["models"].values()),
            "other_work": busy,
        },
    )
    record(section, args, busy)


if __name__ == "__main__":
    main(sys.argv[1:])
