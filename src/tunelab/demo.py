"""The main job on the bundled sample data: what `make demo` and `tunelab demo` run.

Format two real-data samples (TREC question classification and DocSpider NL→MongoDB with
schema context), validate the results and analyze them for the local default model and for
the hosted providers; then fine-tune the bundled model with LoRA on the TREC training file
and ask the result a few held-out questions. Each step is a plain API call, so the demo is
also the shortest example of the Python API.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.catalog import DEFAULT_MODEL
from tunelab.data.analyze import analyze_file
from tunelab.data.formatter import FormatReport, format_dataset
from tunelab.data.report_html import render_html
from tunelab.data.sources import SourceOptions
from tunelab.data.validate import ValidationReport, validate_file
from tunelab.engine import TrainConfig, TrainResult, generate, load_base, load_trained, train
from tunelab.engine.dataset import read_chat_jsonl
from tunelab.io import atomic_write_text
from tunelab.samples import sample_path


@dataclass
class DatasetRun:
    """One sample taken through format → validate → analyze."""

    name: str
    formatted: FormatReport
    validation: ValidationReport
    analysis: dict
    report_html: Path


# Enough LoRA steps to see the loss fall and the answer format learnt, in about a minute of
# two CPU cores; `make demo` is meant to be watched, not waited for.
DEMO_TRAIN_STEPS = 24
DEMO_QUESTIONS = 4
_ITEM = re.compile(r"<text>\s*(.*?)\s*</text>", re.DOTALL)


@dataclass
class Answer:
    question: str
    expected: str
    answer: str


@dataclass
class FineTune:
    """The bundled model fine-tuned on the TREC sample, and its answers to held-out questions."""

    result: TrainResult
    answers: list[Answer]


@dataclass
class DemoResult:
    output_dir: Path
    datasets: list[DatasetRun] = field(default_factory=list)
    fine_tune: FineTune | None = None


def _format_samples(out: Path) -> dict[str, FormatReport]:
    # The demo owns its output directory, so it overwrites its own earlier outputs.
    trec = format_dataset(
        sample_path("trec"), out / "trec_train.jsonl", out / "trec_val.jsonl", force=True
    )
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
    on_progress: Callable[[dict], None] | None = None,
) -> FineTune:
    """LoRA on the formatted TREC sample, then greedy answers to a few validation questions."""
    base, tokenizer, info = load_base(model)
    config = TrainConfig(method="lora", batch_size=8, max_steps=steps, seed=0)
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
    tuned, tokenizer, _ = load_trained(output_dir)
    held_out = read_chat_jsonl(val_path)[:DEMO_QUESTIONS]
    prompts = [list(example.messages[:-1]) for example in held_out]
    completions = generate(tuned, tokenizer, prompts, max_new_tokens=16)
    answers = [
        Answer(_question_of(example), example.messages[-1]["content"], completion.text)
        for example, completion in zip(held_out, completions, strict=True)
    ]
    return FineTune(result, answers)


def _question_of(example) -> str:
    user = next(m["content"] for m in example.messages if m["role"] == "user")
    found = _ITEM.search(user)
    return found.group(1) if found else user


def run_demo(
    output_dir: Path,
    *,
    model: str = DEFAULT_MODEL,
    train_steps: int = DEMO_TRAIN_STEPS,
    on_step: Callable[[str], None] | None = None,
    on_progress: Callable[[dict], None] | None = None,
) -> DemoResult:
    """Format, validate and analyze the bundled samples into `output_dir`, then fine-tune.

    `train_steps` 0 skips the fine-tuning.
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
        step(f"fine-tune {model} with LoRA on the TREC sample ({train_steps} steps)")
        trec = result.datasets[0]
        result.fine_tune = fine_tune_trec(
            trec,
            output_dir / "trec-lora",
            model=model,
            steps=train_steps,
            on_progress=on_progress,
        )
    return result
