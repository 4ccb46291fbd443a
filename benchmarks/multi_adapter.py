"""Benchmark: many LoRA fine-tunes of the bundled base served by one `tunelab serve`.

Twenty LoRA outputs of SmolLM2-135M (rank 16 on every linear layer, random weights: the
figures do not depend on what the adapters learnt) are listed to one server (`--model DIR`
each), which loads them as adapters into one copy of the base.

(a) Memory: the server's resident memory after answering with one fine-tune, against a
second server's after answering with all twenty (target: below 1.5x).
(b) Throughput: 8 concurrent clients each asking a different fine-tune, against 8 asking
the same one, on the same server (target: at least 70% of the tokens/s), greedy, 16 tokens.

    python benchmarks/multi_adapter.py              # or: make bench
    python benchmarks/multi_adapter.py --quick      # 3 fine-tunes, few requests, not recorded
    python benchmarks/multi_adapter.py --no-record  # full run, RESULTS.md left alone
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from _common import describe_machine, load_average, record, recording_parser, torch_versions
from serve import MAX_TOKENS, MODEL, Server, seed_home, short_questions

FINE_TUNES, QUICK_FINE_TUNES = 20, 3
CLIENTS = 8
ROUNDS, QUICK_ROUNDS = 12, 2  # requests per client in each throughput run
MEMORY_TARGET, THROUGHPUT_TARGET = 1.5, 0.7


def write_adapters(root: Path, count: int) -> list[Path]:
    """`count` LoRA training outputs of the bundled model, as `tunelab train` lays them out."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunelab.engine.models import load_base

    base, _, _ = load_base(MODEL, device="cpu")
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
    model = get_peft_model(base, config)
    outputs = []
    for index in range(count):
        torch.manual_seed(index)
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                torch.nn.init.normal_(parameter, std=0.02)
        output = root / f"fine-tune-{index:02d}"
        model.save_pretrained(output)
        summary = {"base_model": MODEL, "method": "lora"}
        (output / "tunelab_config.json").write_text(json.dumps(summary), encoding="utf-8")
        outputs.append(output)
    return outputs


def resident_mb(pid: int) -> float:
    """A process's resident memory now (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def ask(client, model: str, messages: list[dict]) -> int:
    response = client.chat.completions.create(
        model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=0
    )
    return response.usage.completion_tokens


def serve(home: Path, adapters: list[Path]) -> Server:
    extra = [flag for adapter in adapters for flag in ("--model", str(adapter))]
    return Server(home, extra)


def tokens_per_second(client, models: list[str], prompts, rounds: int) -> float:
    """`CLIENTS` clients, client i asking `models[i]` `rounds` questions one after another."""

    def client_run(index: int) -> int:
        asked = prompts[index * rounds : (index + 1) * rounds]
        return sum(ask(client, models[index], messages) for messages in asked)

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        tokens = sum(pool.map(client_run, range(CLIENTS)))
    return tokens / (time.perf_counter() - start)


def memory_with(root: Path, adapters: list[Path], asked: list[Path], prompt) -> float:
    """Resident MB of a fresh server after answering once with each of `asked`."""
    from openai import OpenAI

    home = root / f"home-{len(asked)}"
    seed_home(home)
    server = serve(home, adapters)
    try:
        client = OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
        for adapter in asked:
            ask(client, str(adapter), prompt)
        return resident_mb(server.process.pid)
    finally:
        server.stop()


def throughput(root: Path, adapters: list[Path], prompts, rounds: int) -> tuple[float, float]:
    """(tokens/s with every client on its own fine-tune, with all on the first one)."""
    from openai import OpenAI

    home = root / "home-throughput"
    seed_home(home)
    server = serve(home, adapters)
    try:
        client = OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
        names = [str(adapters[i % len(adapters)]) for i in range(CLIENTS)]
        tokens_per_second(client, names, prompts, 1)  # warm-up: every adapter loaded
        different = tokens_per_second(client, names, prompts, rounds)
        same = tokens_per_second(client, [names[0]] * CLIENTS, prompts, rounds)
        return different, same
    except Exception:
        print(f"server log:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()


def markdown(count: int, one_mb: float, all_mb: float, different: float, same: float) -> str:
    return "\n".join(
        [
            f"## multi_adapter: {count} LoRA fine-tunes of SmolLM2-135M on one `tunelab serve` "
            f"— {date.today().isoformat()}",
            "",
            f"Machine: {describe_machine(torch_versions())}.",
            "",
            "| measure | figure | target |",
            "| --- | --- | --- |",
            f"| resident memory, 1 fine-tune answered | {one_mb:.0f} MB | |",
            f"| resident memory, {count} fine-tunes answered | {all_mb:.0f} MB "
            f"({all_mb / one_mb:.2f}x) | < {MEMORY_TARGET}x |",
            f"| {CLIENTS} clients, one fine-tune each | {different:.0f} tokens/s | |",
            f"| {CLIENTS} clients, all on one fine-tune | {same:.0f} tokens/s | |",
            f"| ratio | {different / same:.0%} | ≥ {THROUGHPUT_TARGET:.0%} |",
            "",
        ]
    )


def main(argv: Sequence[str] = ()) -> None:
    args = recording_parser(__doc__, "3 fine-tunes; not recorded").parse_args(list(argv))
    count = QUICK_FINE_TUNES if args.quick else FINE_TUNES
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    prompts = short_questions(CLIENTS * rounds)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-adapters-") as tmp:
        root = Path(tmp)
        adapters = write_adapters(root, count)
        one_mb = memory_with(root, adapters, adapters[:1], prompts[0])
        all_mb = memory_with(root, adapters, adapters, prompts[0])
        print(f"memory: {one_mb:.0f} MB with 1 fine-tune, {all_mb:.0f} MB with {count}", flush=True)
        different, same = throughput(root, adapters, prompts, rounds)
    print(
        f"throughput: {different:.0f} tokens/s different, {same:.0f} same (load {load_average()})"
    )
    section = markdown(count, one_mb, all_mb, different, same)
    record(section, args)


if __name__ == "__main__":
    main(sys.argv[1:])
