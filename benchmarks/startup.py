"""Start-up time of the light commands: `tunelab --help` and `tunelab validate` of a 10-line
file, against the interpreter alone (`python -c pass`), each the median of several runs.

    python benchmarks/startup.py      # appends a section to RESULTS.md

Wall time is what a user waits; CPU time (user + system, children) is robust to a busy
machine. Nothing is recorded while other work holds the CPU: figures measured under
contention say nothing about tunelab.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

from _common import append_results, describe_machine, wait_until_quiet

RUNS = 7
LINE = (
    '{"messages": [{"role": "system", "content": "You answer briefly."}, '
    '{"role": "user", "content": "What is the capital of France? (%d)"}, '
    '{"role": "assistant", "content": "Paris."}]}\n'
)


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of `argv`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def median_of(argv: list[str]) -> dict:
    timed(argv)  # warm the file cache
    runs = [timed(argv) for _ in range(RUNS)]
    return {
        "wall": statistics.median(w for w, _ in runs),
        "cpu": statistics.median(c for _, c in runs),
    }


def main() -> None:
    quiet = wait_until_quiet()
    print(f"before timing: {quiet}")
    if not quiet.startswith("quiet"):
        print("not recorded: the machine is busy with other work")
        return
    with tempfile.TemporaryDirectory(prefix="tunelab-startup-") as tmp:
        data = Path(tmp) / "ten.jsonl"
        data.write_text("".join(LINE % i for i in range(10)), encoding="utf-8")
        os.environ["TUNELAB_HOME"] = str(Path(tmp) / "home")
        tunelab = [sys.executable, "-m", "tunelab"]
        rows = {
            "`python -c pass`": median_of([sys.executable, "-c", "pass"]),
            "`tunelab --help`": median_of([*tunelab, "--help"]),
            "`tunelab validate` (10 lines)": median_of([*tunelab, "validate", str(data)]),
        }
    base = rows["`python -c pass`"]
    lines = [
        f"## startup: light commands vs the bare interpreter — {date.today().isoformat()}",
        "",
        f"Machine: {describe_machine('tunelab ' + version('tunelab'))}.",
        "",
        f"Median of {RUNS} runs each, after one warm-up run. Before timing: {quiet}.",
        "",
        "| command | wall | CPU | over `python -c pass` (wall) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        extra = row["wall"] - base["wall"]
        lines.append(
            f"| {name} | {row['wall'] * 1000:.0f} ms | {row['cpu'] * 1000:.0f} ms "
            f"| +{extra * 1000:.0f} ms |"
        )
    print("\n".join(lines))
    append_results("\n".join(lines))


if __name__ == "__main__":
    main()
