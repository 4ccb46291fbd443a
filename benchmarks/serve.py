"""Benchmark: `tunelab serve` chat completions against the engine called in-process.

A real `tunelab serve` process on a free loopback port, with its own TUNELAB_HOME (a temporary
directory whose bundled SmolLM2 is a link to the user's converted copy; when there is none
yet, it is converted first and the conversion timed apart). Requests: the first TREC
questions of the bundled sample, each alone as the user message, greedy, at most MAX_TOKENS
new tokens, sent with the `openai` SDK (the client users have).

(a) Latency: one request at a time, each question answered by the server and by the engine
in this process (`load_base` + `generate`, same messages and settings), alternately, so that
both see the same machine; p50/p95 and the server's overhead at p50 (target ≤ 10%).
(b) Throughput: the same questions, THROUGHPUT_REQUESTS requests, sent by 1 client and by
CLIENTS concurrent clients (threads); completions/s and generated tokens/s, and the ratio
(target ≥ 3x: the server answers concurrent requests in one batched generation).
Both sides are warmed up first; every server answer is checked against the in-process one.

    python benchmarks/serve.py              # or: make bench
    python benchmarks/serve.py --quick      # fewer requests, nothing recorded
    python benchmarks/serve.py --no-record  # full run, RESULTS.md left alone
"""

from __future__ import annotations

import csv
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

from _common import (
    REPO,
    TREC_SAMPLE,
    cpu_snapshot,
    describe_machine,
    load_average,
    other_work,
    record,
    recording_parser,
    torch_versions,
    wait_until_quiet,
)

MODEL = "smollm2-135m-instruct"
MAX_TOKENS = 16
CLIENTS = 8
LATENCY_REQUESTS, QUICK_LATENCY_REQUESTS = 40, 10
# Enough rounds of 8 that the first, ramping-up batches do not dominate the steady state.
THROUGHPUT_REQUESTS, QUICK_THROUGHPUT_REQUESTS = 160, 16
WARMUP_REQUESTS = 3
SERVER_START_TIMEOUT_S = 120
# Answers arriving closer together than this came from one batched generation.
BATCH_GAP_S = 0.05


def short_questions(n: int) -> list[list[dict]]:
    """The first `n` questions of the bundled TREC sample, each as a one-message chat."""
    with TREC_SAMPLE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[:n]
    return [[{"role": "user", "content": row["text"]}] for row in rows]


def seed_home(home: Path) -> float | None:
    """Link the user's converted model into `home`; the conversion's seconds if it ran now."""
    from tunelab.catalog import WEIGHTS_MARKER, bundled_model_dir
    from tunelab.settings import get_settings

    cached = get_settings().models_dir / MODEL
    seconds = None
    if not (cached / WEIGHTS_MARKER).exists():
        start = time.perf_counter()
        bundled_model_dir(weights=True)  # into the user's TUNELAB_HOME, as `tunelab` does
        seconds = time.perf_counter() - start
    (home / "models").mkdir(parents=True)
    (home / "models" / MODEL).symlink_to(cached, target_is_directory=True)
    return seconds


class Server:
    """`tunelab serve` on a free loopback port with TUNELAB_HOME=`home`, its log in `home`
    (`extra`: more of `tunelab serve`'s flags)."""

    def __init__(self, home: Path, extra: Sequence[str] = ()) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = home / "server.log"
        python_path = filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])
        env = {
            **os.environ,
            "TUNELAB_HOME": str(home),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(python_path),
        }
        env.pop("TUNELAB_API_KEY", None)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tunelab",
                    "serve",
                    "--port",
                    str(self.port),
                    "--no-worker",
                    "--max-batch-size",
                    str(CLIENTS),
                    *extra,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started_in = self._wait_ready()

    def _wait_ready(self) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < SERVER_START_TIMEOUT_S:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).is_success:
                    return time.perf_counter() - start
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"the server was not ready in {SERVER_START_TIMEOUT_S} s")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def ask_server(client, messages: list[dict]) -> dict:
    start = time.perf_counter()
    response = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=0
    )
    choice, end = response.choices[0], time.perf_counter()
    return {
        "seconds": end - start,
        "end": end,
        "answer": (choice.message.content, choice.finish_reason),
        "tokens": response.usage.completion_tokens,
    }


def ask_engine(model, tokenizer, messages: list[dict]) -> dict:
    from tunelab.engine.generate import generate

    start = time.perf_counter()
    completion = generate(model, tokenizer, [messages], max_new_tokens=MAX_TOKENS)[0]
    return {
        "seconds": time.perf_counter() - start,
        "answer": (completion.text, completion.finish_reason),
        "tokens": completion.completion_tokens,
    }


def latency(client, model, tokenizer, prompts: list[list[dict]], pids: list[int]) -> dict:
    """Each question to the engine, then to the server; their times and answers."""
    engine, server = [], []
    before = cpu_snapshot(pids)
    for messages in prompts:
        engine.append(ask_engine(model, tokenizer, messages))
        server.append(ask_server(client, messages))
    return {
        "engine": engine,
        "server": server,
        "other_work": other_work(before, cpu_snapshot(pids)),
    }


def throughput(client, prompts: list[list[dict]], n: int, clients: int, pids: list[int]) -> dict:
    """`n` requests cycling over `prompts`, sent by `clients` threads at once."""
    requests = [prompts[i % len(prompts)] for i in range(n)]
    before = cpu_snapshot(pids)
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda messages: ask_server(client, messages), requests))
    after = cpu_snapshot(pids)
    seconds = after[0] - before[0]
    return {
        "results": results,
        "seconds": seconds,
        "completions_per_s": n / seconds,
        "tokens_per_s": sum(r["tokens"] for r in results) / seconds,
        "p50": float(np.percentile([r["seconds"] for r in results], 50)),
        "batch_sizes": answered_together([r["end"] for r in results]),
        "other_work": other_work(before, after),
    }


def answered_together(ends: list[float]) -> list[int]:
    """How many answers arrived together, run after run: the batches the server formed, as
    its clients saw them (a batch's answers come within milliseconds, batches ~1 s apart)."""
    sizes, last = [], None
    for end in sorted(ends):
        if last is None or end - last > BATCH_GAP_S:
            sizes.append(0)
        sizes[-1], last = sizes[-1] + 1, end
    return sizes


def mismatches(results: list[dict], expected: list[dict]) -> int:
    """Server answers that differ from the engine's for the same question (cycled)."""
    return sum(r["answer"] != expected[i % len(expected)]["answer"] for i, r in enumerate(results))


def percentiles(results: list[dict]) -> tuple[float, float]:
    return tuple(float(x) for x in np.percentile([r["seconds"] for r in results], [50, 95]))


def markdown(lat: dict, one: dict, many: dict, context: dict) -> str:
    (engine_p50, engine_p95), (server_p50, server_p95) = context["engine_p"], context["server_p"]
    overhead = server_p50 / engine_p50 - 1
    n_lat, n_tp = len(lat["server"]), len(one["results"])
    lines = [
        f"## serve: `tunelab serve` chat completions vs the engine in-process (SmolLM2-135M) — "
        f"{date.today()}",
        "",
        f"Machine: {context['machine']}.",
        "",
        f"Requests: the first {n_lat} questions of the bundled TREC sample, each alone as the "
        f"user message, greedy, `max_tokens` {MAX_TOKENS}, through the `openai` SDK to a "
        f"`tunelab serve` process on loopback (`--max-batch-size {CLIENTS}`); the engine "
        "in-process: `load_base` + `generate` with the same messages and settings, one at a "
        "time. Model on " + context["device"] + ", fp32 on both sides; both warmed up.",
        "",
        f"Latency, one request at a time ({n_lat} questions, server and engine alternately; "
        f"other work took {lat['other_work']:.0%} of the CPU):",
        "",
        "| | p50 | p95 |",
        "| --- | ---: | ---: |",
        f"| engine in-process | {engine_p50 * 1000:.0f} ms | {engine_p95 * 1000:.0f} ms |",
        f"| `tunelab serve` | {server_p50 * 1000:.0f} ms | {server_p95 * 1000:.0f} ms |",
        "",
        f"Server overhead at p50: {overhead:+.1%} ({(server_p50 - engine_p50) * 1000:+.0f} ms; "
        "target ≤ 10%).",
        "",
        f"Throughput, {n_tp} requests over the same questions:",
        "",
        "| clients | completions/s | generated tokens/s | p50 latency | mean batch (answers "
        "arriving together) | other work on the CPU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for clients, run in ((1, one), (CLIENTS, many)):
        batch = np.mean(run["batch_sizes"])
        lines.append(
            f"| {clients} | {run['completions_per_s']:.2f} | {run['tokens_per_s']:.0f} | "
            f"{run['p50'] * 1000:.0f} ms | {batch:.1f} | {run['other_work']:.0%} |"
        )
    conversion = context["conversion"]
    lines += [
        "",
        f"{CLIENTS} clients / 1 client: {many['tokens_per_s'] / one['tokens_per_s']:.2f}x "
        f"generated tokens/s, {many['completions_per_s'] / one['completions_per_s']:.2f}x "
        "completions/s (target ≥ 3x). Answers differing from the engine's: "
        f"{context['mismatches']['latency']} of {n_lat} one at a time, "
        f"{context['mismatches']['one']} of {n_tp} from 1 client, "
        f"{context['mismatches']['many']} of {n_tp} from {CLIENTS} clients. Not timed above: "
        f"server start to `/health` {context['started_in']:.1f} s, its first request "
        f"(loads the model) {context['first_request']:.1f} s"
        + (f", converting the bundled GGUF {conversion:.0f} s" if conversion else "")
        + f". Before timing the machine was {context['quiet']}; load average "
        f"{context['load_before']}.",
    ]
    return "\n".join(lines)


def warm_up(client, model, tokenizer, prompts: list[list[dict]]) -> float:
    """Both sides answer a few questions (and the server one full batch); the first request's
    seconds, which include the server loading the model."""
    first = ask_server(client, prompts[0])["seconds"]
    for messages in prompts[:WARMUP_REQUESTS]:
        ask_engine(model, tokenizer, messages)
        ask_server(client, messages)
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda m: ask_server(client, m), (prompts * CLIENTS)[:CLIENTS]))
    return first


def main(argv: Sequence[str] = ()) -> None:
    args = recording_parser(__doc__, "fewer requests; not recorded").parse_args(list(argv))

    from openai import OpenAI

    from tunelab.engine.models import load_base

    prompts = short_questions(QUICK_LATENCY_REQUESTS if args.quick else LATENCY_REQUESTS)
    n_throughput = QUICK_THROUGHPUT_REQUESTS if args.quick else THROUGHPUT_REQUESTS
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-serve-") as tmp:
        conversion = seed_home(Path(tmp))
        server = Server(Path(tmp))  # before this process loads a tokenizer: no fork warnings
        try:
            client = OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
            model, tokenizer, _ = load_base(MODEL)
            first_request = warm_up(client, model, tokenizer, prompts)
            pids = [os.getpid(), server.process.pid]
            quiet, load_before = wait_until_quiet(), load_average()
            lat = latency(client, model, tokenizer, prompts, pids)
            print(
                f"latency: {percentiles(lat['engine'])} in-process, "
                f"{percentiles(lat['server'])} server",
                flush=True,
            )
            one = throughput(client, prompts, n_throughput, 1, pids)
            many = throughput(client, prompts, n_throughput, CLIENTS, pids)
            print(
                f"throughput: {one['tokens_per_s']:.0f} tokens/s from 1 client, "
                f"{many['tokens_per_s']:.0f} from {CLIENTS} (answered together: "
                f"{many['batch_sizes']})",
                flush=True,
            )
        except Exception:
            print(f"server log:\n{server.log_tail()}", file=sys.stderr)
            raise
        finally:
            server.stop()

    context = {
        "machine": describe_machine(torch_versions()),
        "device": str(next(model.parameters()).device),
        "engine_p": percentiles(lat["engine"]),
        "server_p": percentiles(lat["server"]),
        "mismatches": {
            "latency": mismatches(lat["server"], lat["engine"]),
            "one": mismatches(one["results"], lat["engine"]),
            "many": mismatches(many["results"], lat["engine"]),
        },
        "started_in": server.started_in,
        "first_request": first_request,
        "conversion": conversion,
        "quiet": quiet,
        "load_before": load_before,
    }
    section = markdown(lat, one, many, context)
    record(section, args, max(lat["other_work"], one["other_work"], many["other_work"]))


if __name__ == "__main__":
    main(sys.argv[1:])
