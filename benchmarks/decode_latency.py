"""Benchmark: one client's decode speed. The engine's streamed generation (`stream_chat`, what
`tunelab serve` runs for one request) against transformers' own greedy `model.generate` (the
baseline: the plain Hugging Face way), batch 1, on the bundled SmolLM2 as the server loads it.

Same process, same loaded model (dtype and thread count alike), same chat prompt, greedy, at
most MAX_NEW_TOKENS new tokens; both warmed up, then ROUNDS rounds taking turns, the best
round of each kept (other work on a shared machine only ever slows a round down). Reported:
time to the first token (the prompt's forward pass and the first step), then the decode
latency per token after it and the tokens/s it gives. Both must give the same tokens.

    python benchmarks/decode_latency.py              # or: make bench
    python benchmarks/decode_latency.py --quick      # fewer tokens and rounds, not recorded
    python benchmarks/decode_latency.py --no-record  # full run, RESULTS.md left alone
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import tunelab  # noqa: F401  (before torch: the passive OpenMP wait policy tunelab runs with)
from _common import describe_machine, record, recording_parser, torch_versions, wait_until_quiet

MODEL = "smollm2-135m-instruct"
MAX_NEW_TOKENS, QUICK_MAX_NEW_TOKENS = 128, 24
ROUNDS, QUICK_ROUNDS = 5, 2
CHAT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]


@dataclass(frozen=True)
class Timing:
    """One generation's token ids and when each arrived (seconds after the call began)."""

    tokens: tuple[int, ...]
    arrivals: tuple[float, ...]

    @property
    def first_token_s(self) -> float:
        return self.arrivals[0]

    @property
    def per_token_s(self) -> float:
        """Mean time per token after the first: the decode steps alone."""
        return (self.arrivals[-1] - self.arrivals[0]) / max(1, len(self.arrivals) - 1)


def engine_timing(model, tokenizer, max_new_tokens: int) -> Timing:
    """tunelab: the engine's stream, timed at each text delta."""
    from tunelab.engine.generate import stream_chat

    stream = stream_chat(model, tokenizer, CHAT, max_new_tokens=max_new_tokens)
    began, arrivals = time.perf_counter(), []
    for _ in stream:
        arrivals.append(time.perf_counter() - began)
    arrivals.append(time.perf_counter() - began)  # the last step (the end of turn: no text)
    assert stream.completion is not None
    tokens = tokenizer(stream.completion.text, add_special_tokens=False)["input_ids"]
    # Deltas can be fewer than tokens (half a character is held back; the end of turn adds
    # no text): spread the decode time over the tokens the engine counted.
    count = stream.completion.usage.completion_tokens
    return Timing(tuple(tokens), _spread(arrivals, count))


def _spread(arrivals: list[float], count: int) -> tuple[float, ...]:
    """`count` arrival times: the first as measured, the rest evenly up to the last."""
    if count <= 1 or len(arrivals) < 2:
        return tuple(arrivals[:1])
    step = (arrivals[-1] - arrivals[0]) / (count - 1)
    return tuple(arrivals[0] + step * k for k in range(count))


def transformers_timing(model, tokenizer, max_new_tokens: int) -> Timing:
    """The baseline: `model.generate`, greedy, timed at each token its streamer receives."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    from tunelab import cores
    from tunelab.engine.generate import encode_chat

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.began, self.arrivals, self.calls = time.perf_counter(), [], 0

        def put(self, value) -> None:
            self.calls += 1
            if self.calls > 1:  # the first call hands over the prompt
                self.arrivals.append(time.perf_counter() - self.began)

        def end(self) -> None:
            pass

    ids = torch.tensor([encode_chat(tokenizer, CHAT)])
    with cores.computing(), torch.inference_mode():  # the engine's thread count
        clock = Clock()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            streamer=clock,
        )
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    tokens = tokenizer(answer, add_special_tokens=False)["input_ids"]
    return Timing(tuple(tokens), tuple(clock.arrivals))


def best_of(rounds: int, runs: dict) -> dict[str, Timing]:
    """Each run's fastest round (by decode latency), the runs taking turns each round."""
    best: dict[str, Timing] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            timing = run()
            if name not in best or timing.per_token_s < best[name].per_token_s:
                best[name] = timing
    return best


def table(best: dict[str, Timing]) -> str:
    rows = [
        "| run | tokens | time to first token | ms/token after it | tokens/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, timing in best.items():
        rows.append(
            f"| {name} | {len(timing.arrivals)} | {timing.first_token_s * 1000:.0f} ms | "
            f"{timing.per_token_s * 1000:.1f} | {1 / timing.per_token_s:.1f} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] = ()) -> None:
    args = recording_parser(__doc__).parse_args(list(argv))

    import torch

    from tunelab.engine.models import load_base

    limit = QUICK_MAX_NEW_TOKENS if args.quick else MAX_NEW_TOKENS
    model, tokenizer, _ = load_base(MODEL)  # as the server loads it
    runs = {
        "transformers `generate` (baseline)": lambda: transformers_timing(model, tokenizer, limit),
        "tunelab `stream_chat`": lambda: engine_timing(model, tokenizer, limit),
    }
    best_of(1, {name: lambda run=run: run() for name, run in runs.items()})  # warm-up
    quiet = "" if args.quick else wait_until_quiet()
    best = best_of(QUICK_ROUNDS if args.quick else ROUNDS, runs)
    baseline, engine = best.values()
    dtype = next(model.parameters()).dtype
    section = (
        f"## decode_latency, {date.today()}\n\n"
        f"{describe_machine(torch_versions())}; {quiet}\n\n"
        f"Batch 1, one chat prompt, greedy, at most {limit} new tokens; {MODEL} on the CPU in "
        f"{str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads; best of "
        f"{QUICK_ROUNDS if args.quick else ROUNDS} rounds each.\n\n{table(best)}\n\n"
        f"tunelab / transformers decode tokens/s: {baseline.per_token_s / engine.per_token_s:.2f}"
        f"; same tokens: {'yes' if baseline.tokens == engine.tokens else 'NO'}\n"
    )
    record(section, args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
