"""Analysis of a chat fine-tuning dataset: tokens, distributions, epochs, billed tokens, cost.

`analyze_file` runs the validator's single streaming pass with a token counter for the
target model and a `TaskFacts` observer, then derives everything from fixed-size numbers:

- recommended epochs: the rule of OpenAI's cookbook (and of `n_epochs="auto"`): target 3
  epochs, at least 100 and at most 25,000 example-passes, between 1 and 25 epochs;
- billed tokens: sum over examples of min(context, tokens), times epochs (providers
  truncate longer examples to the context);
- cost: those billed tokens at the target model's price, and the same tokens at every other
  priced model so providers can be compared (other tokenizers count somewhat differently);
- local models: estimated training time from the engine's measured throughput in
  `$TUNELAB_HOME/throughput.json`, or none until there is a measurement.

Preference (dpo) and reinforcement files are scanned by `method_scan` and measured the same
way on their own token counts (dpo: the prompt and both answers; reinforcement: the prompt and
the answer budget). The price table holds supervised prices: a dpo file is priced at them (as
OpenAI bills preference training per token at the supervised rate), and reinforcement training,
billed by time on the hosted platforms, gets no price.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.catalog import DEFAULT_MODEL, ModelSpec, context_limit, resolve_model
from tunelab.data.facts import TaskFacts
from tunelab.data.method_scan import (
    DEFAULT_MAX_ANSWER_TOKENS,
    MethodOptions,
    scan_method_files,
)
from tunelab.data.methods import resolve_method
from tunelab.data.pricing import load_prices, price_for
from tunelab.data.tokens import load_counter
from tunelab.data.validate import FileScan, ValidationReport, scan_files
from tunelab.throughput import estimate_seconds

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
HISTOGRAM_BINS = 20
DISTRIBUTIONS = ("messages_per_example", "tokens_per_example", "assistant_tokens_per_example")


def recommended_epochs(n_examples: int) -> int:
    """Epochs for `n_examples` by the cookbook's rule; 0 when there is nothing to train."""
    if n_examples <= 0:
        return 0
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def billed_tokens(tokens: np.ndarray, context: int | None, n_epochs: int) -> int:
    """Tokens a provider bills: each example capped at the context, times epochs."""
    capped = tokens if context is None else np.minimum(tokens, context)
    return int(capped.sum()) * n_epochs


def distribution(values: np.ndarray) -> dict:
    """min/max/mean/median/p5/p95 and a histogram (one bin per value when the range is small)."""
    if values.size == 0:
        stats = dict.fromkeys(("min", "max", "mean", "median", "p5", "p95"))
        return {**stats, "histogram": {"edges": [], "counts": []}}
    low, high = int(values.min()), int(values.max())
    if high - low < HISTOGRAM_BINS:
        edges = np.arange(low, high + 2)
    else:
        edges = np.histogram_bin_edges(values, bins=HISTOGRAM_BINS)
    counts, edges = np.histogram(values, bins=edges)
    p5, median, p95 = np.percentile(values, [5, 50, 95]).tolist()
    return {
        "min": low,
        "max": high,
        "mean": round(float(values.mean()), 3),
        "median": median,
        "p5": round(p5, 3),
        "p95": round(p95, 3),
        "histogram": {"edges": [round(float(e), 2) for e in edges], "counts": counts.tolist()},
    }


@dataclass(frozen=True)
class FileStats:
    """The statistics of one scanned file (training or validation)."""

    file: str
    n_examples: int
    n_invalid_examples: int
    total_tokens: int
    total_assistant_tokens: int
    n_over_context: int
    n_missing_system: int
    n_missing_user: int
    distributions: dict  # DISTRIBUTIONS' names -> `distribution`'s summary
    validation: dict  # the validation report's summary


@dataclass(frozen=True)
class FileAnalysis(FileStats):
    """What `analyze_file` finds: the training file's statistics (with the validation of
    both files), the target model, epochs, billed tokens, prices, task facts, the
    validation file's statistics and local training time. `to_json()` is the JSON of
    `tunelab analyze --json` (its keys in this order)."""

    model: str
    provider: str
    tokenizer: str
    exact_counts: bool
    context_limit: int | None
    n_epochs: int
    billed_tokens: int
    estimated_cost_usd: float | None
    costs: list[dict]  # the same billed tokens at every priced model
    task: dict  # `TaskFacts.result()`, with the label list's cost
    val: FileStats | None
    notes: list[str]
    estimated_train_seconds: float | None = None
    throughput: dict | None = None
    method: str = "supervised"  # the file's format, see `data.methods`

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileAnalysis:
        """The analysis `to_json()` wrote (the studio keeps it beside a dataset)."""
        val = data.get("val")
        return cls(**{**data, "val": FileStats(**val) if val else None})


def file_stats(scan: FileScan, context: int | None) -> dict:
    """The statistics of one scanned file (training or validation)."""
    tokens = scan.array_of("tokens")
    return {
        "file": scan.path,
        "n_examples": scan.n_valid,
        "n_invalid_examples": scan.n_examples - scan.n_valid,
        "total_tokens": int(tokens.sum()),
        "total_assistant_tokens": int(scan.array_of("assistant_tokens").sum()),
        "n_over_context": int((tokens > context).sum()) if context else 0,
        "n_missing_system": scan.n_missing_system,
        "n_missing_user": scan.n_missing_user,
        "distributions": {
            "messages_per_example": distribution(scan.array_of("n_messages")),
            "tokens_per_example": distribution(tokens),
            "assistant_tokens_per_example": distribution(scan.array_of("assistant_tokens")),
        },
        "validation": ValidationReport(scan).summary(),
    }


def analyze_file(
    path: str | Path,
    *,
    val_path: str | Path | None = None,
    model: str | ModelSpec = DEFAULT_MODEL,
    prices: str | Path | None = None,
    progress: Callable[[str, int], None] | None = None,
    method: str | None = None,
    max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
) -> FileAnalysis:
    """Validate and analyze a training file (and a validation file) in one pass each.

    Returns the `FileAnalysis` (see the module docstring; `tunelab analyze --json` prints
    its `to_json()`). `method` None detects the file's format; `max_answer_tokens` is the
    answer budget counted for each reinforcement item.
    `progress(path, bytes_read)` reports reading progress.
    """
    spec = resolve_model(model) if isinstance(model, str) else model
    price_table = load_prices(prices)  # read first: a bad --prices file fails before the scan
    method = resolve_method(path, method).method
    counter = load_counter(spec)
    context = context_limit(spec)
    facts = TaskFacts()
    if method == "supervised":
        train, val = scan_files(path, val_path, spec, counter, context, progress, facts.observe)
    else:
        options = MethodOptions(method, max_answer_tokens=max_answer_tokens)
        train, val = scan_method_files(path, val_path, options, spec, counter, progress)
    report = ValidationReport(train, val, spec, method=method)
    analysis = file_stats(train, context)
    n_epochs = recommended_epochs(train.n_valid)
    billed = billed_tokens(train.array_of("tokens"), context, n_epochs)
    own_price = price_for(price_table, spec.provider, spec.name)
    if method == "reinforcement":  # billed by training time, which no table here holds
        own_price, price_table = None, []
    analysis.update(
        model=spec.name,
        provider=spec.provider,
        tokenizer=counter.name,
        exact_counts=counter.exact and not counter.approximated,
        context_limit=context,
        n_epochs=n_epochs,
        billed_tokens=billed,
        estimated_cost_usd=own_price.cost(billed) if own_price else None,
        costs=[
            {**dataclasses.asdict(p), "estimated_cost_usd": p.cost(billed)}
            for p in sorted(price_table, key=lambda p: (p.provider, p.usd_per_million))
        ],
        validation=report.summary(),
        task=facts.result(),
        val=None if val is None else file_stats(val, context),
        notes=_method_notes(method, max_answer_tokens),
        method=method,
    )
    analysis.update(_training_time(spec, billed, analysis["notes"]))
    _label_list_cost(analysis)
    if spec.trains_here:
        analysis["notes"].append("local training has no price: it costs compute time")
    return FileAnalysis.from_json(analysis)


def _method_notes(method: str, max_answer_tokens: int) -> list[str]:
    """What the figures of a preference or reinforcement file mean."""
    if method == "dpo":
        return [
            "dpo: tokens are the prompt and both answers; priced at the supervised rates "
            "(OpenAI bills preference training per token at them)"
        ]
    if method == "reinforcement":
        return [
            f"reinforcement: tokens are the prompt and an answer budget of "
            f"{max_answer_tokens:,} tokens per item; hosted reinforcement training is billed "
            "by training time, so no price is given"
        ]
    return []


# From this share of the tokens on, the label list is worth leaving out of the prompts.
LONG_LABEL_LIST_SHARE = 0.25


def _label_list_cost(analysis: dict) -> None:
    """What the label list repeated in every classification prompt costs: its share of the
    tokens (estimated from its share of the text), of the billed tokens, price and time."""
    facts = analysis["task"]["classification"]
    listed = facts.get("label_list")
    if analysis["task"]["kind"] != "classification" or not listed or not listed["share_of_text"]:
        return
    share = listed["share_of_text"]
    seconds = analysis.get("estimated_train_seconds")
    cost = analysis.get("estimated_cost_usd")
    listed.update(
        share_of_tokens=share,
        billed_tokens=round(analysis["billed_tokens"] * share),
        estimated_cost_usd=round(cost * share, 4) if cost is not None else None,
        estimated_train_seconds=round(seconds * share, 1) if seconds is not None else None,
    )
    what = f"{listed['billed_tokens']:,} of the {analysis['billed_tokens']:,} billed tokens"
    if listed["estimated_cost_usd"] is not None:
        what += f", about ${listed['estimated_cost_usd']:,.2f}"
    if listed["estimated_train_seconds"] is not None:
        what += f", about {listed['estimated_train_seconds'] / 60:,.1f} min of training"
    note = (
        f"the label list repeated in every prompt is about {share:.0%} of the tokens ({what}); "
        "prompt tokens are computed (and billed) though never trained on"
    )
    if share >= LONG_LABEL_LIST_SHARE:
        note += "; `tunelab format --template short` leaves it out of the prompts"
    analysis["task"]["notes"].append(note)


def _training_time(spec: ModelSpec, billed: int, notes: list[str]) -> dict:
    """Seconds to train locally (LoRA, the default method) at the throughput measured here."""
    result = {"estimated_train_seconds": None, "throughput": None}
    if not spec.trains_here:
        return result
    estimate = estimate_seconds(spec.name, "lora", billed)
    if estimate is None:
        notes.append("no measured training throughput yet: train once to get a time estimate")
        return result
    seconds, measured = estimate
    return {"estimated_train_seconds": round(seconds, 1), "throughput": measured}
