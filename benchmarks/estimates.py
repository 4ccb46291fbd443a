"""How close `tunelab train --dry-run`'s time estimate is to the run it announces.

    python benchmarks/estimates.py      # appends a section to RESULTS.md

The bundled SmolLM2-135M is fine-tuned with LoRA on the bundled TREC sample, each command in
its own process as a user runs it. One measuring run records the model's throughput; then for
each `--max-steps` the dry run's estimate is compared with the run's own training time (what
the estimate covers: tokenizing, steps, writing the output) and with the wall time
of the whole command (which adds starting Python and loading the model). The baseline is the
measured time itself: a ratio of 1.0 is a perfect estimate. Not a test: a timed comparison on
a shared machine measures the load, so nothing is recorded while other work holds the CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

from _common import append_results, describe_machine, wait_until_quiet

STEPS = (3, 10, 30)
MEASURING_STEPS = 5
# Batches of 8 and no validation file: on this sample `auto` picks batches of one example and
# validates every step, which would make the runs minutes of validation, not of steps.
SETTINGS = ["--batch-size", "8"]


def tunelab(*argv: str) -> tuple[dict, float]:
    """The JSON a `tunelab` command prints, and the command's wall seconds."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tunelab", *argv, "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout), time.perf_counter() - began


def format_trec(folder: Path) -> tuple[Path, Path]:
    from tunelab.data.formatter import format_dataset
    from tunelab.samples import sample_path

    train, val = folder / "train.jsonl", folder / "val.jsonl"
    format_dataset(sample_path("trec"), train, val, force=True)
    return train, val


def compare(train: Path, out: Path, steps: int) -> dict:
    data = ["--train", str(train), *SETTINGS, "--max-steps", str(steps)]
    plan, _ = tunelab("train", *data, "-o", str(out / f"plan-{steps}"), "--dry-run")
    result, wall = tunelab("train", *data, "-o", str(out / f"run-{steps}"))
    return {
        "steps": steps,
        "estimate": plan["estimated_seconds"],
        "training": result["elapsed_seconds"],
        "wall": wall,
    }


def main() -> None:
    quiet = wait_until_quiet()
    print(f"before timing: {quiet}")
    if not quiet.startswith("quiet"):
        print("not recorded: the machine is busy with other work")
        return
    with tempfile.TemporaryDirectory(prefix="tunelab-estimates-") as tmp:
        folder = Path(tmp)
        os.environ["TUNELAB_HOME"] = str(folder / "home")
        train, _ = format_trec(folder)
        data = ["--train", str(train), *SETTINGS]
        tunelab("train", *data, "--max-steps", str(MEASURING_STEPS), "-o", str(folder / "measure"))
        rows = [compare(train, folder, steps) for steps in STEPS]
    for row in rows:
        print(row)
    append_results(render(rows, quiet))


def render(rows: list[dict], quiet: str) -> str:
    lines = [
        f"## estimates: `train --dry-run` vs the run it announces — {date.today().isoformat()}",
        "",
        f"Machine: {describe_machine('tunelab ' + version('tunelab'))}.",
        "",
        "SmolLM2-135M, LoRA, batch 8, bundled TREC sample (no validation file), each command "
        f"in its own process, after one {MEASURING_STEPS}-step measuring run. Baseline: the "
        f"measured time (ratio 1.0 is exact). Before timing: {quiet}.",
        "",
        "| --max-steps | estimate | training time | estimate / training | command wall "
        "| estimate / wall |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['steps']} | {row['estimate']:.1f} s | {row['training']:.1f} s | "
            f"{row['estimate'] / row['training']:.2f} | {row['wall']:.1f} s | "
            f"{row['estimate'] / row['wall']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
