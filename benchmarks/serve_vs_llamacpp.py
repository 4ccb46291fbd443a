"""Benchmark: `tunelab serve` against llama.cpp's own OpenAI-compatible server, side by side.

The same model on every server: a LoRA fine-tune of the bundled SmolLM2 (one training step,
so that it is a local fine-tune, as `auto` serves with llama.cpp), merged and exported to
GGUF by `tunelab export --format gguf`. Servers: `tunelab serve --backend torch` (the PyTorch
engine, batching concurrent requests), `tunelab serve --backend auto` (llama.cpp through
llama-cpp-python, from tunelab's own cached conversion) and llama-cpp-python's server
(`python -m llama_cpp.server`) on the exported GGUF. The same TREC questions, greedy, at most
MAX_TOKENS new tokens, streamed through the `openai` SDK by 1, 8 and 32 concurrent clients:
generated tokens/s, time to first token, p50/p95 latency, and each server's resident memory
(peak). Generated tokens are counted with the model's tokenizer on every server alike. Every
server's answers are checked against llama.cpp's server's under greedy decoding.

Target (issue 29): `tunelab serve` (auto) at 1 and 8 clients ≥ 0.8x llama.cpp's server.

    python benchmarks/serve_vs_llamacpp.py              # or: make bench (needs the bench extra)
    python benchmarks/serve_vs_llamacpp.py --quick      # few requests, 1 and 8 clients, unrecorded
    python benchmarks/serve_vs_llamacpp.py --no-record  # full run, RESULTS.md left alone
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import numpy as np

from _common import REPO, describe_machine, record, recording_parser, wait_until_quiet
from serve import MODEL, SERVER_START_TIMEOUT_S, Server, seed_home, short_questions

CLIENT_COUNTS, QUICK_CLIENT_COUNTS = (1, 8, 32), (1, 8)
REQUESTS_PER_CLIENT, QUICK_REQUESTS_PER_CLIENT = 4, 1
MAX_TOKENS = 32
TARGET_RATIO = 0.8


def fine_tune(home: Path, work: Path) -> tuple[Path, Path]:
    """A one-step LoRA fine-tune of the bundled model and its GGUF export (run, gguf file)."""
    data = work / "train.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for messages in short_questions(8):
            answer = {"role": "assistant", "content": "A short answer."}
            handle.write(json.dumps({"messages": [*messages, answer]}) + "\n")
    run, export = work / "run", work / "export"
    tunelab(
        home,
        "train",
        "--model",
        MODEL,
        "--train",
        str(data),
        "--output",
        str(run),
        "--method",
        "lora",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
    )
    tunelab(home, "export", str(run), "--format", "gguf", "--output", str(export))
    return run, export / "model.gguf"


def tunelab(home: Path, *arguments: str) -> None:
    """Run a tunelab command of this checkout with TUNELAB_HOME=`home`."""
    python_path = filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])
    environment = {
        **os.environ,
        "TUNELAB_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(python_path),
    }
    subprocess.run([sys.executable, "-m", "tunelab", *arguments], check=True, env=environment)


class LlamaCppServer:
    """llama-cpp-python's OpenAI-compatible server on a free loopback port."""

    def __init__(self, gguf: Path, log_path: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--port",
            str(self.port),
            "--n_ctx",
            "8192",
        ]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < SERVER_START_TIMEOUT_S:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp's server exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=1).is_success:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"llama.cpp's server was not ready in {SERVER_START_TIMEOUT_S} s")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ask(client, model: str, messages: list[dict], count_tokens) -> dict:
    """One streamed, greedy answer: its text, latency, time to first token, tokens."""
    start = time.perf_counter()
    first, pieces = None, []
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
    end = time.perf_counter()
    text = "".join(pieces)
    return {
        "seconds": end - start,
        "ttft": (first or end) - start,
        "text": text,
        "tokens": count_tokens(text),
    }


def load(client, model: str, prompts, clients: int, per_client: int, count_tokens) -> dict:
    """`clients` threads, each sending `per_client` requests; the figures of the run."""
    requests = [prompts[i % len(prompts)] for i in range(clients * per_client)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda m: ask(client, model, m, count_tokens), requests))
    seconds = time.perf_counter() - start
    latencies = [r["seconds"] for r in results]
    return {
        "tokens_per_s": sum(r["tokens"] for r in results) / seconds,
        "ttft_p50": float(np.percentile([r["ttft"] for r in results], 50)),
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "answers": {json.dumps(m): r["text"] for m, r in zip(requests, results, strict=True)},
    }


def measure(url: str, model: str, prompts, counts, per_client: int, count_tokens) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    for messages in prompts[:2]:  # warm up: the first answer loads the model
        ask(client, model, messages, count_tokens)
    return {n: load(client, model, prompts, n, per_client, count_tokens) for n in counts}


def markdown(figures: dict, memory: dict, mismatches: dict, context: str) -> str:
    lines = [
        f"## serve vs llama.cpp ({date.today()})",
        "",
        context,
        "",
        "| server | clients | tokens/s | TTFT p50 s | p50 s | p95 s | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in figures.items():
        for n, run in runs.items():
            lines.append(
                f"| {name} | {n} | {run['tokens_per_s']:.1f} | {run['ttft_p50']:.3f} | "
                f"{run['p50']:.2f} | {run['p95']:.2f} | {memory[name]:.0f} |"
            )
    reference = figures["llama.cpp server"]
    for name in ("tunelab auto", "tunelab torch"):
        ratios = [figures[name][n]["tokens_per_s"] / reference[n]["tokens_per_s"] for n in (1, 8)]
        lines.append(
            f"\n{name} / llama.cpp server, tokens/s at 1 and 8 clients: "
            f"{ratios[0]:.2f}x, {ratios[1]:.2f}x (target ≥ {TARGET_RATIO}x); "
            f"greedy answers differing from llama.cpp's: {mismatches[name]}"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] = ()) -> None:
    args = recording_parser(__doc__, "few requests, nothing recorded").parse_args(list(argv))
    if importlib.util.find_spec("llama_cpp") is None:
        print("llama-cpp-python is not installed: pip install -e '.[bench]' (make bench does)")
        return
    counts = QUICK_CLIENT_COUNTS if args.quick else CLIENT_COUNTS
    per_client = QUICK_REQUESTS_PER_CLIENT if args.quick else REQUESTS_PER_CLIENT
    prompts = short_questions(16)
    with tempfile.TemporaryDirectory(prefix="tunelab-vs-llamacpp-") as tmp:
        work = Path(tmp)
        home = work / "home"
        seed_home(home)
        run, gguf = fine_tune(home, work)
        from tunelab.engine.models import load_tokenizer
        from tunelab.engine.sources import resolve_model_source

        tokenizer = load_tokenizer(resolve_model_source(run))

        def count_tokens(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        quiet = wait_until_quiet()
        figures, memory = {}, {}
        llama = LlamaCppServer(gguf, work / "llama.log")
        try:
            figures["llama.cpp server"] = measure(
                llama.url, "model", prompts, counts, per_client, count_tokens
            )
            memory["llama.cpp server"] = peak_rss_mb(llama.process.pid)
        finally:
            llama.stop()
        for backend in ("auto", "torch"):
            server = Server(home, ["--backend", backend, "--model", str(run)])
            try:
                name = f"tunelab {backend}"
                figures[name] = measure(
                    server.url, str(run), prompts, counts, per_client, count_tokens
                )
                memory[name] = peak_rss_mb(server.process.pid)
            finally:
                server.stop()
    expected = {
        k: v for run in figures["llama.cpp server"].values() for k, v in run["answers"].items()
    }
    mismatches = {
        name: sum(
            text != expected.get(key)
            for r in figures[name].values()
            for key, text in r["answers"].items()
        )
        for name in ("tunelab auto", "tunelab torch")
    }
    context = f"{describe_machine('llama-cpp-python ' + _llama_version())}; {quiet}"
    report = markdown(figures, memory, mismatches, context)
    record(report, args)


def _llama_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


if __name__ == "__main__":
    main(sys.argv[1:])
