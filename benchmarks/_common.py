"""Helpers the benchmarks share: their flags, the machine they ran on, process figures,
RESULTS.md.

Not a benchmark itself (no `main()`), so `run_all.py` only imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
TREC = SHARED_DATASETS / "trec" / "train.tsv"
TREC_SAMPLE = REPO / "src" / "tunelab" / "resources" / "samples" / "trec_sample.tsv"
# The LoRA both sides of a comparison with TRL train: rank, alpha, dropout and the 7
# projections of every block.
LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The same LoRA as tunelab's TrainConfig fields.
TUNELAB_LORA = {
    "method": "lora",
    "lora_rank": LORA_RANK,
    "lora_alpha": LORA_ALPHA,
    "lora_dropout": LORA_DROPOUT,
    "lora_target_modules": LORA_TARGETS,
}
# Figures taken while other work kept more than this fraction of the CPU busy are printed
# but not recorded: threads waiting on each other make such timings meaningless.
CONTENDED_ABOVE = 0.15


def recording_parser(
    doc: str, quick_help: str = "a tiny run; not recorded"
) -> argparse.ArgumentParser:
    """An argument parser with the flags of a benchmark that records: --quick, --no-record.

    Its description is the first paragraph of `doc` (the benchmark's docstring); the caller
    adds its own flags before parsing.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--no-record", action="store_true", help="leave RESULTS.md alone")
    return parser


def record(section: str, args: argparse.Namespace, busy: float = 0.0) -> None:
    """Print `section`; append it to RESULTS.md unless it was a check or the CPU was contended.

    A check is a run with --quick or --no-record; `busy` is the fraction of the CPU that
    other work took while timing (`other_work`), compared with CONTENDED_ABOVE.
    """
    print(section)
    if args.quick or args.no_record:
        print("not recorded (--quick or --no-record)")
    elif busy > CONTENDED_ABOVE:
        print(f"not recorded: other work took {busy:.0%} of the CPU (over {CONTENDED_ABOVE:.0%})")
    else:
        append_results(section)


def trec_source() -> tuple[Path, str]:
    """TREC's training questions (the shared dataset, else the bundled sample) and how
    RESULTS.md names them."""
    if TREC.exists():
        return TREC, "`../shared/datasets/trec/train.tsv`"
    return TREC_SAMPLE, "the bundled sample"


def run_child(script: str, side: str, arguments: list[str], timeout: float) -> dict:
    """`script --child side arguments` in a process of its own (this checkout's sources first):
    the figures of its last line of output (JSON), with the wall time it took."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, script, "--child", side, *arguments]
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {side} run failed:\n{done.stderr[-4000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {**figures, "wall_seconds": time.perf_counter() - started}


def trl_lora():
    """The same LoRA as peft's `LoraConfig`, as TRL's trainers take it."""
    from peft import LoraConfig  # here: only the TRL side of a benchmark needs peft

    return LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # no /proc (not Linux): platform.processor() below
    return platform.processor() or platform.machine()


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def describe_machine(versions: str) -> str:
    """One line for RESULTS.md: OS, CPU, cores, load now, Python and the `versions` given."""
    return (
        f"{platform.platform()}; {cpu_model()}; {os.cpu_count()} cores (load average at the "
        f"end: {load_average()}); Python {platform.python_version()}; {versions}"
    )


def torch_versions(*more: str) -> str:
    """`torch X, transformers Y` and `more`: the versions a model benchmark's figures depend on."""
    import torch  # here, not at the top: helpers that need no torch stay quick to import
    import transformers

    return ", ".join(
        [f"torch {torch.__version__}", f"transformers {transformers.__version__}", *more]
    )


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: robust to a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def append_results(section: str) -> None:
    """Append a markdown section to RESULTS.md (with the file's header if it is new)."""
    with RESULTS.open("a", encoding="utf-8") as out:
        if RESULTS.stat().st_size == 0:
            out.write(
                "# Benchmark results\n\nAppended by `make bench` (benchmarks/run_all.py).\n\n"
            )
        out.write(section.rstrip("\n") + "\n\n")
    print(f"appended to {RESULTS}")


def busy_fraction(seconds: float = 3.0) -> float:
    """Fraction of all cores busy over `seconds` (from /proc/stat; 0 where unavailable)."""

    def sample() -> tuple[int, int]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return 0, 0
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    busy_0, total_0 = sample()
    time.sleep(seconds)
    busy_1, total_1 = sample()
    return (busy_1 - busy_0) / (total_1 - total_0) if total_1 > total_0 else 0.0


def wait_until_quiet(max_seconds: float = 180, threshold: float = 0.2) -> str:
    """Wait (up to `max_seconds`) for other work to leave the CPU; says what it found.

    Timings on a shared machine are only meaningful when nothing else runs: torch's threads
    wait on each other, so one busy core can slow a training step far more than twofold.
    """
    start = time.perf_counter()
    busy = busy_fraction()
    while busy > threshold and time.perf_counter() - start < max_seconds:
        time.sleep(10)
        busy = busy_fraction()
    waited = time.perf_counter() - start
    state = "quiet" if busy <= threshold else "still busy"
    return f"{state} ({busy:.0%} of the CPU busy with other work after waiting {waited:.0f} s)"


def cpu_snapshot(pids: list[int]) -> tuple[float, float, float]:
    """(wall clock, CPU-seconds the whole machine has been busy, CPU-seconds of `pids`) now.

    Two snapshots around a timed phase give `other_work`: what processes other than the
    benchmark's own (itself, a server it started) took from the machine meanwhile.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # minus idle and iowait
    except (OSError, ValueError):
        busy = 0.0
    own = 0.0
    for pid in pids:
        try:
            # After the command name (which may hold spaces): utime and stime are fields 12, 13.
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own += (int(stat[11]) + int(stat[12])) / ticks
        except (OSError, ValueError, IndexError):
            pass  # the process has exited: its time no longer counts
    return time.perf_counter(), busy, own


def other_work(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """Fraction of all cores that other processes kept busy between two `cpu_snapshot`s."""
    wall = end[0] - start[0]
    if wall <= 0:
        return 0.0
    others = (end[1] - start[1]) - (end[2] - start[2])
    return max(0.0, others / (wall * (os.cpu_count() or 1)))
