"""The main job on the bundled sample data: what `make demo` and `tunelab demo` run.

Format two real-data samples (TREC question classification and DocSpider NL→MongoDB with
schema context), validate the results and analyze them for the local default model and for
the hosted providers; then fine-tune the bundled model with LoRA on the TREC training file
and evaluate the base and the fine-tuned model side by side on the held-out validation
questions (`tunelab eval classify`). Each step is a plain API call, so the demo is also the
shortest example of the Python API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tunelab.catalog import DEFAULT_MODEL
from tunelab.data.analyze import FileAnalysis, analyze_file
from tunelab.data.formatter import FormatReport, format_dataset
from tunelab.data.prompts import ClassificationPrompt
from tunelab.data.report_html import render_html
from tunelab.data.sources import SourceOptions
from tunelab.data.validate import ValidationReport, validate_file
from tunelab.engine.config import TrainConfig
from tunelab.evals.classify import evaluate_classification
from tunelab.evals.items import load_items
from tunelab.evals.result import EvaluationResult
from tunelab.evals.runs import record_run
from tunelab.io import atomic_write_text
from tunelab.samples import sample_path

if TYPE_CHECKING:
    from tunelab.engine.steps import StepRecord
    from tunelab.engine.trainer import TrainResult


@dataclass
class DatasetRun:
    """One sample taken through format → validate → analyze."""

    name: str
    formatted: FormatReport
    validation: ValidationReport
    analysis: FileAnalysis
    report_html: Path


# The recipe that `benchmarks/recipe_sweep.py --data demo` measured best on the demo's own
# split (RESULTS.md) within the ~6 minutes `make demo` takes on two CPU cores. The
# short prompt leaves the label list out: its tokens are computed every step though never
# learned from, so a step costs less and the same minutes train on more questions. (`tunelab
# format` keeps the full prompt by default: an untrained or hosted model needs the list.)
DEMO_TEMPLATE = "short"
DEMO_TRAIN_STEPS = 60
DEMO_BATCH_SIZE = 16
DEMO_QUESTIONS = 4
_ITEM = re.compile(r"<text>\s*(.*?)\s*</text>", re.DOTALL)


@dataclass
class HeldOutAnswer:
    question: str
    expected: str
    answer: str


@dataclass
class FineTune:
    """The bundled model fine-tuned on the TREC sample, and its answers to held-out questions."""

    result: TrainResult
    answers: list[HeldOutAnswer]
    evaluation: EvaluationResult | None = None  # base vs fine-tuned on the validation file


@dataclass
class DemoResult:
    output_dir: Path
    datasets: list[DatasetRun] = field(default_factory=list)
    fine_tune: FineTune | None = None


def format_trec_sample(out: Path, template: str = DEMO_TEMPLATE) -> FormatReport:
    """The bundled TREC sample split into the demo's training and held-out files."""
    # The demo owns its output directory, so it overwrites its own earlier outputs.
    return format_dataset(
        sample_path("trec"),
        out / "trec_train.jsonl",
        out / "trec_val.jsonl",
        options=SourceOptions(prompt=ClassificationPrompt(template=template)),
        force=True,
    )


def demo_train_config(steps: int) -> TrainConfig:
    """The demo's LoRA run: `auto`'s recipe (learning rate, schedule) for `steps` steps."""
    # Validation loss a few times per run: each evaluation costs a pass over the file.
    return TrainConfig(
        method="lora",
        batch_size=DEMO_BATCH_SIZE,
        max_steps=steps,
        seed=0,
        eval_every=max(1, steps // 4),
    )


def _format_samples(out: Path) -> dict[str, FormatReport]:
    trec = format_trec_sample(out)
    docspider = format_dataset(
        sample_path("docspider"),
        out / "docspider_train.jsonl",
        out / "docspider_val.jsonl",
        options=SourceOptions(
            context_field="db_id", context_file=sample_path("docspider_collections")
        ),
        force=True,
    )
    return {"trec": trec, "docspider": docspider}


def fine_tune_trec(
    run: DatasetRun,
    output_dir: Path,
    *,
    model: str,
    steps: int,
    on_progress: Callable[[StepRecord], None] | None = None,
) -> FineTune:
    """LoRA on the formatted TREC sample, then greedy answers to a few validation questions."""
    from tunelab.engine import load_base, train  # torch loads only when the demo trains

    base, tokenizer, info = load_base(model)
    config = demo_train_config(steps)
    train_path, val_path = Path(run.formatted.train_output), Path(run.formatted.val_output)
    result = train(
        base,
        tokenizer,
        train_path,
        val_path,
        config,
        output_dir,
        base_model=info.name,
        force=True,
        callback=on_progress,
    )
    return FineTune(result, [])


def add_evaluation(fine_tune: FineTune, val_path: Path, model: str, progress=None) -> None:
    """Base vs fine-tuned on the held-out file, and a few of the fine-tuned model's answers."""
    tuned = Path(fine_tune.result.output_dir)
    fine_tune.evaluation = evaluate_base_and_tuned(val_path, model, tuned, tuned.parent, progress)
    fine_tune.answers = [
        HeldOutAnswer(_question_of_text(row["question"]), row["gold"], row["answer"])
        for row in _outputs(fine_tune.evaluation)[str(tuned)][:DEMO_QUESTIONS]
    ]


def evaluate_base_and_tuned(
    val_path: Path, base: str, tuned: Path, out: Path, progress=None
) -> EvaluationResult:
    """`tunelab eval classify` on the held-out file: the base model against the fine-tuned."""
    data = load_items(val_path)
    models = [base, str(tuned)]
    return record_run(
        "classify",
        models=models,
        data=data.describe(),
        options={"source": "demo"},
        task=lambda: evaluate_classification(data, models, progress=progress),
        output_dir=out / "trec_eval",
    )


def _outputs(result: EvaluationResult) -> dict:
    """Every scored answer per model, from the run's result.json."""
    return json.loads(Path(result.json_path).read_text(encoding="utf-8"))["outputs"]


def _question_of_text(user: str) -> str:
    found = _ITEM.search(user)
    return found.group(1) if found else user


def run_demo(
    output_dir: Path,
    *,
    model: str = DEFAULT_MODEL,
    train_steps: int = DEMO_TRAIN_STEPS,
    on_step: Callable[[str], None] | None = None,
    on_progress: Callable[[StepRecord], None] | None = None,
    eval_progress=None,
) -> DemoResult:
    """Format, validate and analyze the bundled samples into `output_dir`, then fine-tune.

    `train_steps` 0 skips the fine-tuning (and the evaluation). `eval_progress(model, total)`
    may return a callback advanced as answers finish (see `tunelab.evals.candidates`).
    """
    step = on_step or (lambda _text: None)
    output_dir.mkdir(parents=True, exist_ok=True)
    step("format the bundled samples into chat JSONL")
    formatted = _format_samples(output_dir)
    result = DemoResult(output_dir)
    for name, report in formatted.items():
        train, val = Path(report.train_output), Path(report.val_output)
        step(f"validate and analyze {name}")
        validation = validate_file(train, val_path=val, model=model)
        analysis = analyze_file(train, val_path=val, model=model)
        html = output_dir / f"{name}_report.html"
        atomic_write_text(html, render_html(analysis))
        result.datasets.append(DatasetRun(name, report, validation, analysis, html))
    if train_steps > 0:
        step(
            f"fine-tune {model} with LoRA on the TREC sample "
            f"({train_steps} steps of {DEMO_BATCH_SIZE} questions)"
        )
        trec = result.datasets[0]
        result.fine_tune = fine_tune_trec(
            trec,
            output_dir / "trec-lora",
            model=model,
            steps=train_steps,
            on_progress=on_progress,
        )
        n_val = trec.formatted.n_val
        step(f"evaluate {model} against the fine-tuned model on {n_val} held-out questions")
        add_evaluation(result.fine_tune, Path(trec.formatted.val_output), model, eval_progress)
    return result
