"""Benchmark: constrained decoding's cost. Batched generation on the bundled SmolLM2 with every
row following a JSON Schema (tunelab's grammar masks) against the same batch unconstrained
(the baseline), in generated tokens per second.

Same process, same loaded model, both warmed up first; the figures and their ratio are
printed and appended to RESULTS.md unless `--quick` or `--no-record`.

    python benchmarks/grammar_overhead.py              # or: make bench
    python benchmarks/grammar_overhead.py --quick      # two prompts, a few tokens, not recorded
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import date

from _common import describe_machine, record, recording_parser, wait_until_quiet

MODEL = "smollm2-135m-instruct"
PROMPTS, QUICK_PROMPTS = 16, 2
MAX_NEW_TOKENS, QUICK_MAX_NEW_TOKENS = 96, 12
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string"},
        "population": {"type": "integer"},
        "landmarks": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "country", "population", "landmarks"],
    "additionalProperties": False,
}
CITIES = ["Paris", "Rome", "Tokyo", "Lima", "Cairo", "Oslo", "Quito", "Hanoi"]


def prompts(n: int) -> list[list[dict]]:
    ask = "Describe {} as JSON with its country, population and landmarks."
    return [[{"role": "user", "content": ask.format(CITIES[i % len(CITIES)])}] for i in range(n)]


def timed(model, tokenizer, chats, max_new_tokens: int, constraint) -> dict:
    from tunelab.engine.generate import generate

    began = time.perf_counter()
    answers = generate(
        model, tokenizer, chats, max_new_tokens=max_new_tokens, constraint=constraint
    )
    seconds = time.perf_counter() - began
    tokens = sum(answer.completion_tokens for answer in answers)
    return {"seconds": seconds, "tokens": tokens, "rate": tokens / seconds}


def main(argv: Sequence[str] = ()) -> None:
    args = recording_parser(__doc__).parse_args(list(argv))

    from tunelab.engine.grammar import Constraint
    from tunelab.engine.models import load_base

    chats = prompts(QUICK_PROMPTS if args.quick else PROMPTS)
    limit = QUICK_MAX_NEW_TOKENS if args.quick else MAX_NEW_TOKENS
    model, tokenizer, _ = load_base(MODEL)
    constraint = Constraint.json_schema(SCHEMA)
    for warm in (None, constraint):  # the tokenizer's grammar view is built once, here
        timed(model, tokenizer, chats[:2], 4, warm)
    quiet = "" if args.quick else wait_until_quiet()
    free = timed(model, tokenizer, chats, limit, None)
    constrained = timed(model, tokenizer, chats, limit, constraint)
    section = (
        f"## grammar_overhead, {date.today()}\n\n{describe_machine('llguidance')}; {quiet}\n\n"
        f"{len(chats)} prompts batched, at most {limit} new tokens, greedy.\n\n"
        "| run | tokens | seconds | tokens/s |\n| --- | --- | --- | --- |\n"
        f"| unconstrained (baseline) | {free['tokens']} | {free['seconds']:.2f} | "
        f"{free['rate']:.1f} |\n"
        f"| JSON Schema (tunelab) | {constrained['tokens']} | {constrained['seconds']:.2f} | "
        f"{constrained['rate']:.1f} |\n\n"
        f"constrained / unconstrained tokens/s: {constrained['rate'] / free['rate']:.2f}\n"
    )
    record(section, args)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
