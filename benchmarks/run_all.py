"""Run every benchmark here: each `benchmarks/*.py` module that defines `main()`.

Modules without `main()` (baselines, helpers) are imported by the benchmarks themselves;
a module with `IN_MAKE_BENCH = False` (a sweep that takes hours) is run by hand only.
A failing benchmark is reported and the others still run; the exit status is 1 if any failed.

    python benchmarks/run_all.py        # what `make bench` runs
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def benchmark_mains():
    """(name, main) for each module in this directory that exposes main()."""
    sys.path.insert(0, str(HERE))  # so benchmarks can import their baselines
    for path in sorted(HERE.glob("*.py")):
        if path.resolve() == Path(__file__).resolve():
            continue
        spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
        if callable(getattr(module, "main", None)) and getattr(module, "IN_MAKE_BENCH", True):
            yield path.name, module.main


def main() -> int:
    failed = []
    for name, run in benchmark_mains():
        print(f"=== {name}", flush=True)
        start = time.perf_counter()
        try:
            run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"=== {name}: {time.perf_counter() - start:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
