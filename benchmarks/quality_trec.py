"""Benchmark: TREC question classification by SmolLM2, before and after a tunelab LoRA run.

Data: TREC's training questions (`../shared/datasets/trec/train.tsv`, else the bundled
sample) formatted as chat by `format_dataset`, whose stratified split (seed fixed) holds out
about HELD_OUT questions; at most FULL.max_train of the others are trained on, in the short
classification prompt (no label list; `--template full` for the default one). Training uses
tunelab's `auto` hyperparameters except the budget's batch size, `max_steps` (chosen to fit
the time budget on a quiet machine) and settings (the learning rate), and is cancelled after
`cancel_after_s` seconds of wall time in any case: it then stops within one step and its last
checkpoint is evaluated, so that training stays within 15 minutes.

Evaluation is tunelab's own, as `tunelab eval classify` runs it: `load_items` on the
held-out chat JSONL, `evaluate_classification` for the base model (the baseline) and the
fine-tuned one in the same run, recorded by `record_run` (in the registry, with result.json
and report.html under `$TUNELAB_HOME/evals/<run id>/`). Figures: accuracy with its Wilson
interval, macro-F1, the invalid-answer rate, and the paired comparison (difference in
accuracy with a bootstrap interval, McNemar's exact test). The majority class of the
training questions is the floor to beat.

Figures are appended to RESULTS.md only for a full run during which other work left the CPU
alone (at most CONTENDED_ABOVE of it): the training time, and so the steps reached within the
budget, depend on it.

    python benchmarks/quality_trec.py              # or: make bench
    python benchmarks/quality_trec.py --quick      # a few steps and items, nothing recorded
    python benchmarks/quality_trec.py --no-record  # full run, RESULTS.md left alone
    python benchmarks/quality_trec.py --minutes 15 --set lora_rank=32 --set lora_alpha=64 \\
        --set learning_rate=4e-4 --set max_steps=auto --set n_epochs=2 \\
        --json-out sweep.jsonl                       # one recipe of a sweep

Every run records its recipe (the resolved training settings) beside its figures, in
RESULTS.md and with --json-out; `--eval-method generate` evaluates by generation instead of
label scoring.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import partial
from pathlib import Path

from _common import (
    cpu_seconds,
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

MODEL = "smollm2-135m-instruct"
HELD_OUT = 300
SEED = 42


@dataclass(frozen=True)
class Budget:
    """How much to train and evaluate: the benchmark itself, or a --quick check that it runs."""

    max_train: int  # training examples (the head of the shuffled training file)
    max_items: int | None  # held-out items evaluated (None: all)
    batch_size: int
    max_steps: int
    # Room for the step in progress and the checkpoint after a cancellation.
    cancel_after_s: float
    # Training settings other than tunelab's auto (as `--set NAME=VALUE` gives them), and the
    # classification prompt of the data (quality_trec.py only).
    settings: tuple[tuple[str, object], ...] = ()
    template: str = "full"


# The recipe that reached 93.9% in 879 s of training on 2026-12-01 (RESULTS.md): the short
# prompt, 5,000 questions, LoRA at lr 5e-4 (`auto`'s rate now; it was 2e-4 then), a cosine
# schedule over 200 steps.
FULL = Budget(
    max_train=5000,
    max_items=None,
    batch_size=16,
    max_steps=200,
    cancel_after_s=900,
    settings=(("learning_rate", 5e-4),),
    template="short",
)
QUICK = Budget(
    max_train=32,
    max_items=16,
    batch_size=4,
    max_steps=3,
    cancel_after_s=300,
    settings=FULL.settings,
    template=FULL.template,
)


def parse_args(argv: Sequence[str], doc: str, classify: bool = False) -> argparse.Namespace:
    parser = recording_parser(doc, "a few steps and items; not recorded")
    if classify:
        parser.add_argument(
            "--eval-method",
            choices=("score", "generate"),
            default="score",
            help="how `eval classify` answers: label scoring or generation",
        )
        parser.add_argument(
            "--template",
            choices=("full", "short"),
            help="classification prompt of the formatted data: with the label list (full) "
            "or without (short, `tunelab format --template short`); default: the budget's",
        )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a training setting as `tunelab train --NAME VALUE` takes it (method=full, "
        "lora_rank=32, lora_alpha=64, lora_target_modules=q_proj,v_proj, learning_rate=1e-4, "
        "lr_scheduler=linear, warmup_ratio=0.1, n_epochs=3, batch_size=16, max_steps=auto, "
        "packing=on, ...); repeat for several. Unset: tunelab's auto, with the budget's "
        "batch size and max_steps",
    )
    parser.add_argument("--max-train", type=int, help="training examples (default: the budget's)")
    parser.add_argument(
        "--minutes", type=float, help="training time budget; the run is cancelled after it"
    )
    parser.add_argument(
        "--json-out", type=Path, help="also append the recipe and the figures to a JSONL file"
    )
    return parser.parse_args(list(argv))


def budget_for(args: argparse.Namespace, full: Budget, quick: Budget) -> Budget:
    """The budget of this run: --quick or the full one, with --max-train and --minutes."""
    budget = quick if args.quick else full
    changes = {}
    if args.max_train:
        changes["max_train"] = args.max_train
    if args.minutes:
        changes["cancel_after_s"] = args.minutes * 60
    return replace(budget, **changes)


def recipe_settings(args: argparse.Namespace, budget: Budget) -> dict:
    """The training settings: the budget's batch size, steps and settings, then each
    --set NAME=VALUE, converted as `tunelab train` converts its flags (so `auto` and `none`
    work too)."""
    from tunelab.cli.train_options import SETTING_TYPES

    settings = {
        "batch_size": budget.batch_size,
        "max_steps": budget.max_steps,
        "seed": SEED,
        **dict(budget.settings),
    }
    for item in args.settings:
        name, _, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in SETTING_TYPES:
            raise SystemExit(f"--set {item}: unknown setting (see `tunelab train --help`)")
        settings[name] = SETTING_TYPES[name].convert(value.strip(), None, None)
    return settings


def recipe_text(recipe: dict) -> str:
    """The resolved recipe in one line (for RESULTS.md)."""
    targets = recipe.get("lora_target_modules")
    targets = ",".join(targets) if targets else "every linear layer of the blocks"
    parts = [f"method {recipe['method']}"]
    if recipe["method"] == "lora":
        parts.append(
            f"r={recipe['lora_rank']}, alpha={recipe['lora_alpha']:g}, dropout "
            f"{recipe['lora_dropout']:g}, targets "
            f"{targets}"
        )
    parts += [
        f"lr {recipe['learning_rate']:.1e} {recipe['lr_scheduler']} with {recipe['warmup_steps']} "
        f"warm-up steps",
        f"{recipe['n_epochs']} epoch(s) planned, batch {recipe['batch_size']}, max_steps "
        f"{recipe['max_steps']}",
        f"weight decay {recipe['weight_decay']:g}, precision {recipe['precision']}, packing "
        f"{recipe.get('packing', 'off')}, max_seq_len {recipe['max_seq_len']}",
    ]
    return "; ".join(parts)


def append_json(path: Path | None, record: dict) -> None:
    """One JSON line per run (recipe and figures), for sweeps over recipes."""
    if path is None:
        return
    import orjson

    with path.open("ab") as out:
        out.write(orjson.dumps(record, default=str) + b"\n")
    print(f"appended to {path}")


def head_lines(source: Path, target: Path, n: int) -> int:
    """Copy the first `n` lines of `source` to `target`; returns how many there were."""
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:n]
    target.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def prepare_data(directory: Path, budget: Budget, template: str = "full") -> dict:
    """Training and held-out chat JSONL files (prompts in `template`), and what they hold."""
    from tunelab.data.formatter import format_dataset
    from tunelab.data.prompts import ClassificationPrompt
    from tunelab.data.sources import SourceOptions

    source, where = trec_source()
    n_rows = sum(1 for _ in source.open(encoding="utf-8")) - 1  # minus the header
    train_all, held_out = directory / "train_all.jsonl", directory / "held_out.jsonl"
    options = SourceOptions(prompt=ClassificationPrompt(template=template))
    report = format_dataset(
        source,
        train_all,
        held_out,
        train_ratio=max(0.5, 1 - HELD_OUT / n_rows),
        seed=SEED,
        options=options,
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
        "template": template,
    }


def print_progress(name: str, total: int):
    """`progress` for tunelab's evaluations: a line per chunk of answers."""
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        print(f"  {name}: {done}/{total} answered", flush=True)

    return advance


def fine_tune(
    train_path: Path,
    out_dir: Path,
    budget: Budget,
    settings: dict,
    *,
    start: str | Path = MODEL,
    reward=None,
) -> tuple[dict, Path]:
    """Train `start` (the base, or an earlier run's output) within the budget (`reward`: a
    reinforcement run's); returns the figures and the directory to load the model from."""
    from tunelab.engine import TrainConfig, train
    from tunelab.engine.models import load_base

    model, tokenizer, _ = load_base(start)
    config = TrainConfig.from_settings(settings)
    context = getattr(model.config, "max_position_embeddings", None)
    cancel = threading.Event()
    timer = threading.Timer(budget.cancel_after_s, cancel.set)
    records: list[dict] = []
    cpu_start, started = cpu_seconds(), time.perf_counter()
    timer.start()
    try:
        result = train(
            model,
            tokenizer,
            train_path,
            None,
            config,
            out_dir,
            base_model=str(start),  # a later run's base is the earlier run's output
            callback=lambda record: records.append(record.as_metrics()),
            cancel=cancel,
            reward=reward,
        )
    finally:
        timer.cancel()
    n_examples = result.dataset["train"]["n_examples"]
    recipe = config.resolve(n_examples, context).to_dict()
    figures = {
        "status": result.status,
        "steps": result.step,
        "epochs": result.step * recipe["batch_size"] / n_examples,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": cpu_seconds() - cpu_start,
        "tokens_per_second": result.tokens_per_second,
        "first_loss": records[0]["loss"],
        "last_loss": sum(r["loss"] for r in records[-5:]) / len(records[-5:]),
        "learning_rate": max(r["learning_rate"] for r in records),
        "precision": recipe["precision"],
        "recipe": recipe,
        "settings_given": settings,
    }
    print(f"trained: {figures}", flush=True)
    return figures, out_dir if result.status == "succeeded" else result.last_checkpoint


def base_answers(json_path: str, n: int = 3) -> list[str]:
    """The base model's first `n` answers, from the run's result.json."""
    import orjson

    outputs = orjson.loads(Path(json_path).read_bytes())["outputs"][MODEL]
    return [row["answer"] for row in outputs[:n]]


def majority_floor(data: dict, held_out) -> tuple[str, float]:
    """The training questions' most common label and its share of the held-out questions."""
    from tunelab.data.prompts import ClassificationPrompt
    from tunelab.evals.classify import gold_labels
    from tunelab.evals.items import load_items

    prompt = ClassificationPrompt()
    train_golds, _ = gold_labels(load_items(data["train"]), prompt)
    held_out_golds, _ = gold_labels(held_out, prompt)
    label, _ = Counter(train_golds).most_common(1)[0]
    return label, held_out_golds.count(label) / len(held_out_golds)


def recorded_run(kind: str, items, models: list[str], options: dict, evaluate, what="") -> dict:
    """`evaluate(items, models, progress=...)` (one of tunelab's evaluations, its progress
    printed) recorded as an evaluation run of `kind`, as `tunelab eval` records it; the run as
    a dict, once its report's path is printed (`what` names the run there)."""
    from tunelab.evals.runs import record_run

    result = record_run(
        kind,
        models=models,
        data=items.describe(),
        options=options,
        task=lambda: evaluate(items, models, progress=print_progress),
    ).to_dict()
    print(f"evaluation run {result['id']}{what}: {result['html_path']}", flush=True)
    return result


def evaluate(data: dict, tuned: Path, budget: Budget, method: str = "score") -> dict:
    """Base vs fine-tuned on the held-out questions, recorded as a tunelab evaluation run."""
    from tunelab.evals.classify import evaluate_classification
    from tunelab.evals.items import load_items

    held_out = load_items(data["held_out"], limit=budget.max_items)
    options = {
        "benchmark": "quality_trec",
        "quick": budget.max_steps == QUICK.max_steps,
        "method": method,
        "fine_tuned": "LoRA output in a temporary directory, deleted after the run",
    }
    scoring = partial(evaluate_classification, method=method)
    result = recorded_run("classify", held_out, [MODEL, str(tuned)], options, scoring)
    result["majority"] = majority_floor(data, held_out)
    return result


def training_sentence(training: dict, budget: Budget) -> str:
    cores_busy = training["cpu_seconds"] / training["seconds"]
    return (
        f"Training: {training['status']} after {training['steps']} steps "
        f"({training['epochs']:.2f} epochs), {training['seconds']:.0f} s wall, "
        f"{training['cpu_seconds']:.0f} CPU-seconds ({cores_busy:.2f} of {os.cpu_count()} "
        f"cores busy on average), {training['tokens_per_second']:,.0f} "
        f"tokens/s (non-padding, engine's own count), loss {training['first_loss']:.2f} → "
        f"{training['last_loss']:.2f} (mean of the last 5 steps)."
    )


def settings_sentence(training: dict, budget: Budget) -> str:
    return (
        f"Recipe: {recipe_text(training['recipe'])}; cancelled at "
        f"{budget.cancel_after_s:.0f} s if still running."
    )


def comparison_sentence(comparison: dict, what: str) -> str:
    """tunelab's paired comparison (fine-tuned − base) in words."""
    low, high = comparison["difference_ci"]
    return (
        f"Fine-tuned − base {what}: {100 * comparison['difference']:+.1f} points (95% "
        f"bootstrap interval {100 * low:+.1f} to {100 * high:+.1f}); McNemar exact p = "
        f"{comparison['p_value']:.2g} (right "
        f"only for the base model: {comparison['a_only']}, only for the fine-tuned one: "
        f"{comparison['b_only']}, of {comparison['n']})."
    )


def row_name(model: str, training: dict) -> str:
    """A results table's name for `model`: the base, or what training made of it."""
    if model == MODEL:
        return "SmolLM2-135M-Instruct (base)"
    method = training["recipe"]["method"]
    return "+ tunelab LoRA" if method == "lora" else f"+ tunelab {method} fine-tuning"


def markdown(data: dict, result: dict, training: dict, context: dict) -> str:
    majority_label, majority = result["majority"]
    budget = context["budget"]
    lines = [
        f"## quality: TREC classification, SmolLM2-135M base vs tunelab "
        f"{training['recipe']['method']} fine-tuning — {date.today()}",
        "",
        f"Machine: {context['machine']}.",
        "",
        f"Data: {data['source']} formatted by `format_dataset` (6 coarse labels, "
        + (
            "default classification prompt"
            if data["template"] == "full"
            else "short classification prompt, no label list"
        )
        + "); "
        f"{result['data']['n_items']} held-out questions (its "
        f"stratified split, seed {SEED}) evaluated, {data['n_train']} of the rest trained on. "
        + settings_sentence(training, budget)
        + f" Evaluation: tunelab's `evaluate_classification` through `record_run` (eval run "
        f"`{result['id']}`), base and fine-tuned in the same run, "
        + (
            "by label scoring (the label whose answer has the highest log-likelihood; no "
            "answer can be invalid)."
            if result["method"] == "score"
            else "by greedy generation; answers that are no valid label count as wrong."
        ),
        "",
        "| model | accuracy (95% Wilson interval) | macro-F1 | invalid answers | evaluation time |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| majority class ({majority_label}) | {majority:.1%} | | | |",
    ]
    for model, figures in result["models"].items():
        low, high = figures["accuracy_ci"]
        lines.append(
            f"| {row_name(model, training)} | {figures['accuracy']:.1%} "
            f"({low:.1%}–{high:.1%}) | {figures['macro_f1']:.3f} | "
            f"{figures['invalid_rate']:.1%} | {figures['seconds']:.0f} s |"
        )
    lines += [
        "",
        comparison_sentence(result["comparisons"][0], "accuracy"),
        "",
        training_sentence(training, budget)
        + " "
        + context_sentence(context)
        + " First base answers: "
        + "; ".join(f"`{text!r}`" for text in base_answers(result["json_path"]))
        + ".",
    ]
    return "\n".join(lines)


def context_sentence(context: dict) -> str:
    return (
        f"Before the run the machine was {context['quiet']}; load average "
        f"{context['load_before']}; other work took {context['other_work']:.0%} of the CPU "
        "during training and evaluation."
    )


def machine(budget: Budget, quiet: str, load_before: str, busy: float) -> dict:
    return {
        "machine": describe_machine(torch_versions()),
        "budget": budget,
        "quiet": quiet,
        "load_before": load_before,
        "other_work": busy,
    }


def quiet_start(args: argparse.Namespace) -> tuple[str, str]:
    """Wait for a quiet CPU (not for a --quick check); what was found, and the load average."""
    quiet = "not waited for (--quick)" if args.quick else wait_until_quiet()
    return quiet, load_average()


def main(argv: Sequence[str] = ()) -> None:
    args = parse_args(argv, __doc__, classify=True)
    budget = budget_for(args, FULL, QUICK)
    settings = recipe_settings(args, budget)
    quiet, load_before = quiet_start(args)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-trec-") as tmp:
        data = prepare_data(Path(tmp), budget, args.template or budget.template)
        before = cpu_snapshot([os.getpid()])
        training, trained_dir = fine_tune(data["train"], Path(tmp) / "run", budget, settings)
        result = evaluate(data, trained_dir, budget, args.eval_method)
        busy = other_work(before, cpu_snapshot([os.getpid()]))
        section = markdown(data, result, training, machine(budget, quiet, load_before, busy))
    append_json(
        args.json_out,
        {
            "benchmark": "quality_trec",
            "date": str(date.today()),
            "template": data["template"],
            "training": training,
            "models": result["models"],
            "other_work": busy,
            "budget": budget,
        },
    )
    record(section, args, busy)


if __name__ == "__main__":
    main(sys.argv[1:])
