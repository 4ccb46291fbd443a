"""Benchmark: tool calling by SmolLM2, before and after a tunelab LoRA run on tool calls.

Data: the bundled tool-calling sample (`src/tunelab/resources/samples/tools_sample.jsonl`:
360 requests for three tools, weather, currency conversion and a timer, written for the
project; some examples go on through the tool's result to a final answer). The first
TRAIN_EXAMPLES are trained on, rendered in the model's tool format as `tunelab train` renders
them (SmolLM2's template has no tools: tunelab's default, tools in the system prompt and
`<tool_call>` blocks); the last HELD_OUT, which end with their call, are the evaluation.

Evaluation is tunelab's own, as `tunelab eval tools` runs it: `load_tool_items`,
`evaluate_tool_calls` for the base model (the baseline) and the fine-tuned one in the same
run, recorded by `record_run`. Figures: the right function, arguments valid against the
tool's schema, arguments equal to the reference, answers that call nothing. Figures are
appended to RESULTS.md only for a full run on a quiet machine (training time depends on it).

    python benchmarks/quality_tools.py              # or: make bench
    python benchmarks/quality_tools.py --quick      # a few steps and items, nothing recorded
    python benchmarks/quality_tools.py --no-record  # full run, RESULTS.md left alone
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from _common import (
    REPO,
    busy_fraction,
    describe_machine,
    record,
    recording_parser,
    wait_until_quiet,
)
from quality_trec import MODEL, Budget, fine_tune, recorded_run

SAMPLE = REPO / "src" / "tunelab" / "resources" / "samples" / "tools_sample.jsonl"
TRAIN_EXAMPLES = 300
HELD_OUT = 60
FULL = Budget(TRAIN_EXAMPLES, None, batch_size=8, max_steps=120, cancel_after_s=15 * 60)
QUICK = Budget(16, 4, batch_size=4, max_steps=2, cancel_after_s=5 * 60)


def split_sample(directory: Path, budget: Budget) -> tuple[Path, Path]:
    """The training head and the held-out tail of the sample, as two JSONL files."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    train, held_out = directory / "tools_train.jsonl", directory / "tools_val.jsonl"
    train.write_text("\n".join(lines[: budget.max_train]) + "\n", encoding="utf-8")
    held_out.write_text("\n".join(lines[-HELD_OUT:]) + "\n", encoding="utf-8")
    return train, held_out


def evaluate(held_out: Path, tuned: Path, budget: Budget) -> dict:
    """Base vs fine-tuned on the held-out requests, recorded as a tunelab evaluation run."""
    from tunelab.evals.tools import evaluate_tool_calls, load_tool_items

    data = load_tool_items(held_out, budget.max_items)
    options = {"benchmark": "quality_tools", "quick": budget is QUICK}
    return recorded_run("tools", data, [MODEL, str(tuned)], options, evaluate_tool_calls)


def markdown(result: dict, training: dict, machine: str) -> str:
    rows = [
        f"| {'base' if name == MODEL else 'fine-tuned'} | {m['function_match']:.1%} | "
        f"{m['arguments_valid']:.1%} | {m['exact_match']:.1%} | {m['no_call_rate']:.1%} |"
        for name, m in result["models"].items()
    ]
    return "\n".join(
        [
            f"## Tool calling, SmolLM2-135M before and after LoRA ({date.today().isoformat()})",
            "",
            f"`benchmarks/quality_tools.py`: {TRAIN_EXAMPLES} training examples of the bundled "
            f"tool-calling sample, {training['steps']} steps in {training['seconds']:.0f} s "
            f"(loss {training['first_loss']:.3f} → {training['last_loss']:.3f}); "
            f"{result['data']['n_items']} held-out requests, greedy.",
            "",
            "| model | right function | valid arguments | exact arguments | no call |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            f"Machine: {machine}",
        ]
    )


def main(argv: Sequence[str] = ()) -> None:
    args = recording_parser(__doc__, "a few steps; nothing recorded").parse_args(list(argv))
    budget = QUICK if args.quick else FULL
    if not args.quick:
        print(f"waiting for a quiet machine: {wait_until_quiet()}", flush=True)
    settings = {"batch_size": budget.batch_size, "max_steps": budget.max_steps}
    with tempfile.TemporaryDirectory(prefix="tunelab-tools-") as tmp:
        train, held_out = split_sample(Path(tmp), budget)
        training, tuned = fine_tune(train, Path(tmp) / "out", budget, settings)
        result = evaluate(held_out, tuned, budget)
    busy = busy_fraction()
    section = markdown(result, training, describe_machine(f"busy after: {busy:.0%}"))
    record(section, args, busy)


if __name__ == "__main__":
    main(sys.argv[1:])
