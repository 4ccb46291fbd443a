"""Benchmark: two tunelab trainings at once against one alone (SmolLM2 LoRA, CPU).

Each training is a real `tunelab train` process (the bundled SmolLM2, LoRA with tunelab's
auto settings, batch BATCH_SIZE, TREC questions formatted as chat by `format_dataset`),
interrupted with Ctrl-C (SIGINT) after RUN_SECONDS; its throughput is the engine's own
non-padding tokens per second at its last step (`metrics.jsonl`). Three phases, one after
the other, in the same run:

1. solo: one training alone (the reference);
2. together: two trainings started at the same moment, both interrupted at the same moment,
   so they overlap for their whole run (tunelab: passive OpenMP wait policy, each process
   at its fair share of the cores, see `tunelab/cores.py`);
3. before: the same pair as tunelab ran before it shared the cores (torch's default wait
   policy: `OMP_WAIT_POLICY` set empty, which OpenMP ignores, and a full thread pool each:
   `TUNELAB_THREADS` = every core).

Target: in phase 2 each of the two reaches at least 40% of the solo tokens/s.

    python benchmarks/concurrent_training.py              # or: make bench
    python benchmarks/concurrent_training.py --quick      # 40 s runs; nothing recorded
    python benchmarks/concurrent_training.py --no-record  # RESULTS.md left alone
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from _common import (
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
BATCH_SIZE = 8
RUN_SECONDS, QUICK_SECONDS = 150, 40
TARGET_SHARE = 0.40
SEED = 42


def prepare_data(directory: Path) -> tuple[Path, str]:
    """TREC as chat JSONL (the training side of `format_dataset`'s split)."""
    from tunelab.data.formatter import format_dataset

    source, where = trec_source()
    train, val = directory / "train.jsonl", directory / "val.jsonl"
    format_dataset(source, train, val, train_ratio=0.9, seed=SEED)
    return train, where


def start_training(train: Path, out_dir: Path, env: dict) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "tunelab",
        "train",
        "--train",
        str(train),
        "--output",
        str(out_dir),
        "--model",
        MODEL,
        "--batch-size",
        str(BATCH_SIZE),
        "--max-steps",
        "100000",
        "--seed",
        str(SEED),
    ]
    log = (out_dir.parent / f"{out_dir.name}.log").open("wb")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def last_record(out_dir: Path) -> dict:
    lines = (out_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1])


def run_together(train: Path, tmp: Path, name: str, n: int, env: dict, seconds: float) -> dict:
    """`n` trainings started together and interrupted together after `seconds`."""
    outs = [tmp / f"{name}-{i}" for i in range(n)]
    processes = [start_training(train, out, env) for out in outs]
    before = cpu_snapshot([p.pid for p in processes])
    time.sleep(seconds)
    after = cpu_snapshot([p.pid for p in processes])
    for process in processes:
        process.send_signal(signal.SIGINT)  # checkpoints and exits within one step
    for process in processes:
        process.wait(timeout=600)
    records = [last_record(out) for out in outs]
    rates = [r["tokens_per_second"] for r in records]
    print(f"{name}: {[round(r) for r in rates]} tokens/s", flush=True)
    return {
        "rates": rates,
        "steps": [r["step"] for r in records],
        "threads": [r.get("threads") for r in records],
        "other_work": other_work(before, after),
    }


def environments() -> tuple[dict, dict]:
    """tunelab's environment, and the one that reproduces torch's defaults (before)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "TUNELAB_THREADS")
    }
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    before = {**base, "OMP_WAIT_POLICY": "", "KMP_BLOCKTIME": "", "TUNELAB_THREADS": str(cores)}
    return base, before


def markdown(solo: dict, together: dict, before: dict, context: dict) -> str:
    reference = solo["rates"][0]

    def row(label: str, run: dict) -> str:
        shares = ", ".join(f"{r:,.0f} ({r / reference:.0%})" for r in run["rates"])
        threads = ", ".join(str(t) for t in run["threads"])
        return f"| {label} | {shares} | {threads} | {run['other_work']:.0%} |"

    worst = min(together["rates"]) / reference
    return "\n".join(
        [
            f"## concurrent training: two tunelab trainings at once vs one alone (SmolLM2-135M "
            f"LoRA) — {date.today()}",
            "",
            f"Machine: {context['machine']}.",
            "",
            f"Data: {context['source']} formatted by `format_dataset`. Each training is a "
            f"`tunelab train` process (LoRA, auto settings, batch {BATCH_SIZE}) interrupted after "
            f"{context['seconds']:.0f} s; tokens/s is the engine's own (non-padding) count at its "
            "last step.",
            "",
            "| | tokens/s (share of solo) | threads | other work on the CPU |",
            "| --- | ---: | ---: | ---: |",
            row("one alone", solo),
            row("two at once (tunelab: passive wait, fair share)", together),
            row("two at once, torch defaults (before)", before),
            "",
            f"Worst of the two: {worst:.0%} of solo (target ≥ {TARGET_SHARE:.0%}). Before timing "
            f"the machine was {context['quiet']}; load average {context['load_before']}.",
        ]
    )


def main(argv: Sequence[str] = ()) -> None:
    args = recording_parser(__doc__, "short runs; not recorded").parse_args(list(argv))
    seconds = QUICK_SECONDS if args.quick else RUN_SECONDS

    from tunelab.engine.models import load_base

    load_base(MODEL)  # the bundled model's one-time conversion, outside the timings
    tunelab_env, before_env = environments()
    quiet, load_before = wait_until_quiet(), load_average()
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-concurrent-") as tmp:
        train, source = prepare_data(Path(tmp))
        solo = run_together(train, Path(tmp), "solo", 1, tunelab_env, seconds)
        together = run_together(train, Path(tmp), "together", 2, tunelab_env, seconds)
        before = run_together(train, Path(tmp), "before", 2, before_env, seconds)

    context = {
        "machine": describe_machine(torch_versions()),
        "source": source,
        "seconds": seconds,
        "quiet": quiet,
        "load_before": load_before,
    }
    section = markdown(solo, together, before, context)
    record(section, args, max(run["other_work"] for run in (solo, together, before)))


if __name__ == "__main__":
    main(sys.argv[1:])
