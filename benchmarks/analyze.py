"""Benchmark: `tunelab analyze` (validation + analysis in one pass) against the cookbook.

Data: a generated 200,000-example chat JSONL (deterministic; real English sentences from the
standard library's docstrings; system + user + assistant, some multi-turn), a 50,000-example
prefix of it, and DocSpider's training set formatted as chat when `../shared/datasets` is
present. Each measurement runs in its own process, which reports its wall time and peak
resident memory (ru_maxrss), so that memory is per measurement and imports are included.

Reports examples/s for the baseline (`baseline_cookbook.py`, tiktoken cl100k) and tunelab
(`analyze_file(model="gpt-3.5-turbo")`, same cl100k accounting), their ratio, checks that
both count the same tokens, and appends the figures to RESULTS.md.

    python benchmarks/analyze.py          # or: make bench
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import orjson

from _common import (
    HERE,
    REPO,
    SHARED_DATASETS,
    append_results,
    cpu_seconds,
    describe_machine,
    peak_rss_mb,
)

DOCSPIDER = SHARED_DATASETS / "docspider"
N_LARGE, N_SMALL = 200_000, 50_000
MODEL = "gpt-3.5-turbo"
SEED = 20250101
REPEATS = 3
# Modules whose docstrings make the corpus: prose and code-ish text, present in every Python.
CORPUS_MODULES = [
    *("argparse", "collections", "csv", "datetime", "decimal", "email.message", "functools"),
    *("heapq", "http.client", "itertools", "json", "logging", "os", "pathlib", "random", "re"),
    *("shutil", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile"),
    *("textwrap", "typing", "unittest", "urllib.request", "zipfile"),
]


# ----- data ---------------------------------------------------------------------------------


def corpus_sentences() -> list[str]:
    import importlib

    texts = []
    for name in CORPUS_MODULES:
        module = importlib.import_module(name)
        texts.append(module.__doc__ or "")
        for attr in sorted(dir(module)):
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if not attr.startswith("_") and isinstance(doc, str):
                texts.append(doc)
    flat = " ".join(" ".join(text.split()) for text in texts)
    return sorted({s for s in re.split(r"(?<=[.!?])\s+", flat) if 20 <= len(s) <= 300})


def generate_chat_jsonl(path: Path, n: int, seed: int = SEED) -> None:
    """n chat examples: 90% with one of a few system prompts, 15% multi-turn."""
    rng = random.Random(seed)
    sentences = corpus_sentences()

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(sentences) for _ in range(rng.randint(low, high)))

    systems = [text(1, 5) for _ in range(12)]
    with path.open("wb") as out:
        for _ in range(n):
            messages = []
            if rng.random() < 0.9:
                messages.append(
                    {"role": "system", "content": systems[int(rng.paretovariate(1.5)) % 12]}
                )
            for _ in range(rng.choices((1, 2, 3), weights=(85, 10, 5))[0]):
                messages.append({"role": "user", "content": text(1, 4)})
                messages.append({"role": "assistant", "content": text(1, 8)})
            out.write(orjson.dumps({"messages": messages}) + b"\n")


def write_prefix(source: Path, target: Path, n: int) -> None:
    with source.open("rb") as src, target.open("wb") as out:
        for _, line in zip(range(n), src, strict=False):
            out.write(line)


def docspider_chat(target: Path) -> bool:
    """DocSpider's question → query pairs as chat JSONL (collections as system context)."""
    if not (DOCSPIDER / "train.json").exists():
        return False
    pairs = json.loads((DOCSPIDER / "train.json").read_text(encoding="utf-8"))
    databases = json.loads((DOCSPIDER / "collections.json").read_text(encoding="utf-8"))
    schemas = {db["db_id"]: _schema_text(db) for db in databases}
    with target.open("wb") as out:
        for pair in pairs:
            system = (
                "Translate the question into a MongoDB query. "
                f"Collections: {schemas.get(pair['db_id'], '')}"
            )
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": pair["question"]},
                {"role": "assistant", "content": pair["query"]},
            ]
            out.write(orjson.dumps({"messages": messages}) + b"\n")
    return True


def _schema_text(db: dict) -> str:
    fields: dict[int, list[str]] = {}
    for index, name in db.get("column_names", []):
        fields.setdefault(index, []).append(name)
    names = db.get("collection_names", [])
    return "; ".join(f"{name}({', '.join(fields.get(i, []))})" for i, name in enumerate(names))


# ----- one measurement per process -----------------------------------------------------------


def measure_in_child(kind: str, path: str) -> dict:
    """Run one measurement here and return its figures (called in a fresh process)."""
    if kind == "baseline":
        sys.path.insert(0, str(HERE))
        import baseline_cookbook

        rss_ready, cpu_ready = peak_rss_mb(), cpu_seconds()
        start = time.perf_counter()
        result = baseline_cookbook.analyze(path)
        seconds = time.perf_counter() - start
        tokens, assistant = result["total_tokens"], result["total_assistant_tokens"]
        n, billed = result["n_examples"], result["billed_tokens"]
    else:
        from tunelab.data.analyze import analyze_file
        from tunelab.data.validate import validate_file

        rss_ready, cpu_ready = peak_rss_mb(), cpu_seconds()
        start = time.perf_counter()
        if kind == "tunelab-validate":
            report = validate_file(path, model=MODEL)
            n, billed = report.train.n_valid, None
            tokens = int(report.train.array_of("tokens").sum())
            assistant = int(report.train.array_of("assistant_tokens").sum())
        else:
            result = analyze_file(path, model=MODEL)
            n, billed = result["n_examples"], result["billed_tokens"]
            tokens, assistant = result["total_tokens"], result["total_assistant_tokens"]
        seconds = time.perf_counter() - start
    return {
        "kind": kind,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - cpu_ready,
        "n_examples": n,
        "total_tokens": tokens,
        "assistant_tokens": assistant,
        "billed_tokens": billed,
        "rss_ready_mb": rss_ready,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_child(kind: str, path: Path) -> dict:
    """The fastest of REPEATS runs, each in a fresh process (the machine may be shared)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    runs = []
    for _ in range(REPEATS):
        done = subprocess.run(
            [sys.executable, __file__, "--child", kind, str(path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{kind} on {path} failed:\n{done.stderr}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda run: run["seconds"])
    return {**best, "all_seconds": [round(run["seconds"], 2) for run in runs]}


# ----- the report ----------------------------------------------------------------------------


def compare(name: str, path: Path, with_validate: bool = False) -> dict:
    base = run_child("baseline", path)
    ours = run_child("tunelab", path)
    row = {"dataset": name, "baseline": base, "tunelab": ours}
    if with_validate:
        row["tunelab_validate"] = run_child("tunelab-validate", path)
    for key in ("total_tokens", "assistant_tokens", "billed_tokens"):
        if base[key] != ours[key]:
            raise AssertionError(f"{name}: {key} differ: baseline {base[key]}, tunelab {ours[key]}")
    row["ratio"] = base["seconds"] / ours["seconds"]
    row["cpu_ratio"] = base["cpu_seconds"] / ours["cpu_seconds"]
    print(
        f"{name}: baseline {_rate(base)}/s, tunelab {_rate(ours)}/s, "
        f"{row['ratio']:.1f}x (CPU time {row['cpu_ratio']:.1f}x); "
        f"tokens equal ({ours['total_tokens']:,}); peak RSS "
        f"{base['peak_rss_mb']:.0f} MB vs {ours['peak_rss_mb']:.0f} MB; runs (s): baseline "
        f"{base['all_seconds']}, tunelab {ours['all_seconds']}",
        flush=True,
    )
    return row


def _rate(m: dict) -> str:
    return f"{m['n_examples'] / m['seconds']:,.0f} ex"


def machine() -> str:
    import numpy
    import quicktok
    import tiktoken

    versions = (
        f"tiktoken {tiktoken.__version__}, quicktok {quicktok.__version__}, "
        f"orjson {orjson.__version__}, numpy {numpy.__version__}"
    )
    return describe_machine(versions)


def markdown(rows: list[dict], notes: list[str]) -> str:
    lines = [
        f"## analyze vs the cookbook notebook — {date.today().isoformat()}",
        "",
        f"Machine: {machine()}.",
        "",
        "Baseline: OpenAI cookbook chat data preparation (json.loads into a list, format checks,",
        f"tiktoken cl100k per message). tunelab: `analyze_file(model={MODEL!r})` (validation and",
        "analysis in one streaming pass, same cl100k accounting). Each run in its own process,",
        f"fastest of {REPEATS}; peak RSS is that process's ru_maxrss, imports included.",
        "",
        "| dataset | examples | baseline ex/s | tunelab ex/s | speed-up (wall) "
        "| CPU seconds, baseline / tunelab | baseline peak RSS | tunelab peak RSS "
        "| tokens (both) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        base, ours = row["baseline"], row["tunelab"]
        lines.append(
            f"| {row['dataset']} | {ours['n_examples']:,} | {_rate(base)[:-3]} | "
            f"{_rate(ours)[:-3]} | {row['ratio']:.1f}x | {base['cpu_seconds']:.2f} / "
            f"{ours['cpu_seconds']:.2f} ({row['cpu_ratio']:.1f}x) | {base['peak_rss_mb']:.0f} MB | "
            f"{ours['peak_rss_mb']:.0f} MB | {ours['total_tokens']:,} |"
        )
    lines.append("")
    for row in rows:
        base, ours = row["baseline"], row["tunelab"]
        lines.append(
            f"- runs on {row['dataset']} (s): baseline {base['all_seconds']}, "
            f"tunelab {ours['all_seconds']}."
        )
    for row in rows:
        if "tunelab_validate" in row:
            v = row["tunelab_validate"]
            lines.append("")
            lines.append(
                f"`validate_file(model={MODEL!r})` alone on {row['dataset']}: {_rate(v)}/s, "
                f"peak RSS {v['peak_rss_mb']:.0f} MB."
            )
    return "\n".join([*lines, "", *notes, ""])


def main() -> None:
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as tmp:
        large, small = Path(tmp) / "chat_200k.jsonl", Path(tmp) / "chat_50k.jsonl"
        start = time.perf_counter()
        generate_chat_jsonl(large, N_LARGE)
        write_prefix(large, small, N_SMALL)
        size = large.stat().st_size / 1e6
        seconds = time.perf_counter() - start
        print(f"generated {N_LARGE:,} examples ({size:,.0f} MB) in {seconds:.1f} s")
        rows.append(compare(f"generated {N_LARGE // 1000}k ({size:,.0f} MB)", large, True))
        rows.append(compare(f"generated {N_SMALL // 1000}k (prefix)", small))
        spider = Path(tmp) / "docspider.jsonl"
        if docspider_chat(spider):
            rows.append(compare("DocSpider train (4,043, as chat)", spider))
        else:
            notes.append(f"DocSpider skipped: {DOCSPIDER} is absent (../shared not checked out).")
            print(notes[-1])
    growth = rows[0]["tunelab"]["peak_rss_mb"] - rows[1]["tunelab"]["peak_rss_mb"]
    base_growth = rows[0]["baseline"]["peak_rss_mb"] - rows[1]["baseline"]["peak_rss_mb"]
    notes.append(
        f"Peak memory from 50k to 200k examples: tunelab +{growth:.0f} MB, baseline "
        f"+{base_growth:.0f} MB."
    )
    print(notes[-1])
    append_results(markdown(rows, notes))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(measure_in_child(sys.argv[2], sys.argv[3])))
    else:
        main()
