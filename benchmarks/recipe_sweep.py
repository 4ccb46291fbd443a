"""Benchmark: which training recipe learns TREC fastest per trained token (the sweep behind
`auto`'s choices and quality_trec's recipe).

Each recipe trains the bundled SmolLM2 on the same TREC questions (quality_trec's data and
held-out split, or with `--data demo` the demo's own split of the bundled 600-question
sample) for `--steps` steps, keeping a checkpoint every `--every` steps; each
checkpoint is evaluated on the held-out questions by label scoring (tunelab's
`evaluate_classification`). The figures are accuracy against steps and trained tokens, which
do not depend on how busy the machine is: the time a recipe needs is its tokens divided by
the tokens/s that `quality_trec.py` and `train_throughput.py` measure on a quiet machine. So
this sweep may run beside other work; it records the load it saw anyway. The baselines are
the base model and `lora-lr2e-4`, the learning rate `auto` gave LoRA until this sweep moved it.

    python benchmarks/recipe_sweep.py                       # every recipe below
    python benchmarks/recipe_sweep.py --data demo --recipes lora-auto --steps 60 --every 20
    python benchmarks/recipe_sweep.py --recipes lora-lr1e-3 full-lr5e-5 --steps 240
    python benchmarks/recipe_sweep.py --quick               # a few steps and items
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from _common import describe_machine, load_average, record, recording_parser
from quality_trec import FULL, MODEL, QUICK, Budget, prepare_data

IN_MAKE_BENCH = False  # hours of training: `make bench` leaves it out; run it by hand

# name -> settings as `tunelab train --NAME VALUE` takes them (on top of the batch size, seed 42).
RECIPES = {
    "lora-auto": {"method": "lora"},
    "lora-lr2e-4": {"method": "lora", "learning_rate": 2e-4},
    "lora-lr5e-4": {"method": "lora", "learning_rate": 5e-4},
    "lora-lr1e-3": {"method": "lora", "learning_rate": 1e-3},
    "lora-r64-lr1e-3": {
        "method": "lora",
        "learning_rate": 1e-3,
        "lora_rank": 64,
        "lora_alpha": 128,
    },
    "full-lr5e-5": {"method": "full", "learning_rate": 5e-5},
    "full-lr2e-4": {"method": "full", "learning_rate": 2e-4},
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = recording_parser(__doc__, "a few steps and items; not recorded")
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--steps", type=int, default=240, help="steps per recipe")
    parser.add_argument("--every", type=int, default=60, help="steps between evaluations")
    parser.add_argument("--max-train", type=int, default=5000, help="training examples")
    parser.add_argument("--template", choices=("full", "short"), default="short")
    parser.add_argument(
        "--data",
        choices=("shared", "demo"),
        default="shared",
        help="quality_trec's TREC split, or the demo's split of the bundled sample",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(list(argv))
    if args.quick:
        args.steps, args.every, args.max_train = 4, 2, 64
    return args


def train_recipe(name: str, data: dict, out_dir: Path, args: argparse.Namespace) -> dict:
    """Train one recipe, keeping every checkpoint; returns its tokens per step and checkpoints."""
    from tunelab.engine import TrainConfig, train
    from tunelab.engine.models import load_base

    settings = {
        **RECIPES[name],
        "batch_size": 4 if args.quick else args.batch_size,
        "seed": 42,
        "max_steps": args.steps,
        "checkpoint_every": args.every,
        "keep_checkpoints": args.steps // args.every + 1,
    }
    model, tokenizer, _ = load_base(MODEL)
    config = TrainConfig.from_settings(settings)
    records: list[dict] = []
    started = time.perf_counter()
    result = train(
        model,
        tokenizer,
        data["train"],
        None,
        config,
        out_dir,
        base_model=MODEL,
        callback=lambda record: records.append(record.as_metrics()),
    )
    tokens = {r["step"]: r["tokens"] for r in records}
    checkpoints = sorted((out_dir / "checkpoints").glob("step-*"))
    print(
        f"{name}: {result.status} after {result.step} steps, {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return {
        "status": result.status,
        "tokens": tokens,
        "checkpoints": checkpoints,
        "recipe": config.resolve(data["n_train"], None).to_dict(),
        "final": out_dir,
        "steps": result.step,
    }


def accuracy_of(models: list[str], held_out) -> dict[str, float]:
    """Held-out accuracy of each model by label scoring."""
    from tunelab.evals.classify import evaluate_classification

    result = evaluate_classification(held_out, models, method="score")
    return {model: result.models[model]["accuracy"] for model in models}


def sweep(args: argparse.Namespace, data: dict, tmp: Path) -> list[dict]:
    """Every recipe's accuracy at every checkpoint: rows of (recipe, step, tokens, accuracy)."""
    from tunelab.evals.items import load_items

    held_out = load_items(data["held_out"], limit=16 if args.quick else None)
    rows = [
        {
            "recipe": "base",
            "step": 0,
            "tokens": 0,
            "accuracy": accuracy_of([MODEL], held_out)[MODEL],
        }
    ]
    print(f"  base model: {rows[0]['accuracy']:.1%}", flush=True)  # a stopped sweep keeps it
    for name in args.recipes:
        trained = train_recipe(name, data, tmp / name, args)
        points = [(int(path.name.split("-")[1]), str(path)) for path in trained["checkpoints"]]
        if trained["status"] == "succeeded" and trained["steps"] not in dict(points):
            points.append((trained["steps"], str(trained["final"])))
        scores = accuracy_of([path for _, path in points], held_out)
        for step, path in sorted(points):
            tokens = sum(n for s, n in trained["tokens"].items() if s <= step)
            rows.append(
                {
                    "recipe": name,
                    "step": step,
                    "tokens": tokens,
                    "accuracy": scores[path],
                    "settings": RECIPES[name],
                }
            )
            print(f"  {name} step {step}: {scores[path]:.1%} ({tokens:,} tokens)", flush=True)
    return rows


def markdown(rows: list[dict], args: argparse.Namespace, data: dict, loads: tuple) -> str:
    lines = [
        f"## recipe sweep: TREC accuracy per trained token, SmolLM2-135M — {date.today()}",
        "",
        describe_machine(""),
        "",
        f"Data: {data['source']}, {args.template} classification prompt, {data['n_train']} "
        f"training questions, batch {args.batch_size}, seed 42, no validation during "
        f"training; accuracy on the held-out questions by label scoring every {args.every} "
        f"steps of a {args.steps}-step schedule. Accuracy per "
        f"step does not depend on the machine's load (load average before: {loads[0]}, "
        f"after: {loads[1]}); time = tokens / the quiet tokens/s measured by quality_trec.",
        "",
        "| recipe | settings | step | trained tokens | held-out accuracy |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        settings = ", ".join(f"{k}={v}" for k, v in row.get("settings", {}).items())
        lines.append(
            f"| {row['recipe']} | {settings} | {row['step']} | {row['tokens']:,} | "
            f"{row['accuracy']:.1%} |"
        )
    return "\n".join(lines)


def demo_data(directory: Path, template: str) -> dict:
    """The demo's own training and held-out files (`tunelab demo`'s split of the sample)."""
    from tunelab.demo import format_trec_sample

    report = format_trec_sample(directory, template)
    print(f"data: the demo's split; {report.n_val} held out, {report.n_train} trained on")
    return {
        "source": "the bundled 600-question TREC sample split as `tunelab demo` splits it",
        "train": Path(report.train_output),
        "held_out": Path(report.val_output),
        "n_train": report.n_train,
        "template": template,
    }


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv)
    budget: Budget = QUICK if args.quick else FULL
    budget = Budget(**{**budget.__dict__, "max_train": args.max_train})
    with tempfile.TemporaryDirectory(prefix="tunelab-sweep-") as tmp:
        tmp = Path(tmp)
        if args.data == "demo":
            data = demo_data(tmp, args.template)
        else:
            data = prepare_data(tmp, budget, template=args.template)
        before = load_average()
        rows = sweep(args, data, tmp)
        section = markdown(rows, args, data, (before, load_average()))
    record(section, args)


if __name__ == "__main__":
    main(sys.argv[1:])
