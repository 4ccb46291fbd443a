"""Benchmark: tunelab's reinforcement training (GRPO) against TRL's `GRPOTrainer` (LoRA on
SmolLM2, CPU).

Same base model (the bundled SmolLM2-135M-Instruct, loaded by `load_base` on both sides), same
items (TREC questions formatted as chat by `format_dataset`, the gold label kept as each
item's `reference_answer`), same reward (tunelab's `text_similarity` grader, `fuzzy_match`
against the reference, through `reward_for`: TRL gets it as its reward function; a graded
score, so that the base model's answers, which never name a label exactly, still spread the
rewards of a group and the reward curves say something), same group size, answer
budget, temperature, LoRA (rank, alpha, dropout, the 7 projections of every block), prompts
per step, learning rate and schedule (linear to 0, no warm-up), and the same loss: GRPO's
(`loss_type="grpo"`: each answer's tokens averaged, then the group), advantages normalised by
the group's standard deviation, KL coefficient 0.04 to the base (the adapter switched off on
both), one optimisation pass per rollout. Everything else is each side's default (tunelab's
`auto` precision and prefix-cached batched sampling; TRL's `GRPOConfig` defaults with
`use_cpu=True`, sampling through transformers' `generate`).

Each side runs STEPS steps in its own process and reports: answer tokens sampled (and trained
on) per second from the end of the first (warm-up) step to the end of the last, its mean
reward per step, and its peak RSS (ru_maxrss).

    python benchmarks/grpo_throughput.py            # or: make bench
    python benchmarks/grpo_throughput.py --steps 2  # a quick check that both sides run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from _common import (
    LORA_ALPHA,
    LORA_RANK,
    LORA_TARGETS,
    TUNELAB_LORA,
    append_results,
    describe_machine,
    load_average,
    peak_rss_mb,
    run_child,
    torch_versions,
    trec_source,
    trl_lora,
    wait_until_quiet,
)

MODEL = "smollm2-135m-instruct"
PROMPTS_PER_STEP = 4
GROUP_SIZE = 4
MAX_ANSWER_TOKENS = 32  # a label is a word or two; the budget bounds the ramblers
TEMPERATURE = 1.0
STEPS = 10  # the first is warm-up
LEARNING_RATE = 2e-5
KL_BETA = 0.04
CLIP_EPSILON = 0.2
SEED = 42
CHILD_TIMEOUT_S = 3600
GRADER = {
    "type": "text_similarity",
    "name": "label",
    "evaluation_metric": "fuzzy_match",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.reference_answer }}",
}


def write_items(directory: Path, n_items: int) -> tuple[Path, str]:
    """`n_items` TREC questions as reinforcement items (the label as `reference_answer`),
    and where the questions came from."""
    from tunelab.data.formatter import format_dataset
    from tunelab.data.reinforcement import item_from_example
    from tunelab.engine import read_chat_jsonl

    source, where = trec_source()
    chat = directory / "trec_train.jsonl"
    format_dataset(source, chat, directory / "trec_val.jsonl", train_ratio=0.9, seed=SEED)
    items = [item_from_example(example) for example in read_chat_jsonl(chat)[:n_items]]
    path = directory / "items.jsonl"
    path.write_bytes(b"".join(item.to_json_line() for item in items if item is not None))
    return path, where


def run_tunelab(items: Path, out_dir: Path, steps: int) -> dict:
    from tunelab.engine import TrainConfig, train
    from tunelab.engine.config import resolve_precision
    from tunelab.engine.models import load_base
    from tunelab.evals.graders.reward import reward_for

    model, tokenizer, _ = load_base(MODEL)
    config = TrainConfig(
        training_method="reinforcement",
        rl_group_size=GROUP_SIZE,
        rl_max_answer_tokens=MAX_ANSWER_TOKENS,
        rl_temperature=TEMPERATURE,
        rl_kl_beta=KL_BETA,
        rl_clip_epsilon=CLIP_EPSILON,
        **TUNELAB_LORA,
        n_epochs=1,
        max_steps=steps,
        batch_size=PROMPTS_PER_STEP,
        learning_rate=LEARNING_RATE,
        lr_scheduler="linear",
        warmup_steps=0,
        seed=SEED,
    )
    records: list[dict] = []
    train(
        model,
        tokenizer,
        items,
        None,
        config,
        out_dir,
        callback=lambda r: records.append({**r.as_metrics(), "wall": time.perf_counter()}),
        reward=reward_for(GRADER),
    )
    answers = PROMPTS_PER_STEP * GROUP_SIZE
    return {
        "side": "tunelab",
        "precision": resolve_precision("auto", "cpu"),
        "step_ends": [r["wall"] for r in records],
        "answer_tokens": [r["answer_tokens"] * answers for r in records],
        "rewards": [r["reward_mean"] for r in records],
        "peak_rss_mb": peak_rss_mb(),
    }


def trl_reward(prompts, completions, reference_answer, **_) -> list[float]:
    """tunelab's grader as TRL's reward function (conversational completions)."""
    from tunelab.evals.graders.reward import reward_for

    score = reward_for(GRADER)
    return [
        score([completion[-1]["content"]], {"reference_answer": reference})[0]
        for completion, reference in zip(completions, reference_answer, strict=True)
    ]


def run_trl(items: Path, out_dir: Path, steps: int) -> dict:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    from tunelab.data.reinforcement import read_reinforcement_file
    from tunelab.engine.models import load_base

    model, tokenizer, _ = load_base(MODEL)
    rows = [
        {"prompt": list(item.messages), "reference_answer": item.fields["reference_answer"]}
        for item in read_reinforcement_file(items)
    ]
    step_ends: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())

    args = trl.GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=PROMPTS_PER_STEP * GROUP_SIZE,  # answers, not prompts
        num_generations=GROUP_SIZE,
        max_completion_length=MAX_ANSWER_TOKENS,
        temperature=TEMPERATURE,
        beta=KL_BETA,
        epsilon=CLIP_EPSILON,
        loss_type="grpo",
        scale_rewards="group",
        num_iterations=1,
        max_steps=steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=SEED,
        disable_tqdm=True,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=trl_reward,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=trl_lora(),
        callbacks=[StepTimes()],
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    answers = PROMPTS_PER_STEP * GROUP_SIZE
    return {
        "side": "trl",
        "precision": "bf16" if args.bf16 else ("fp16" if args.fp16 else "fp32"),
        "step_ends": step_ends,
        "answer_tokens": [entry["completions/mean_length"] * answers for entry in logs],
        "rewards": [entry["reward"] for entry in logs],
        "peak_rss_mb": peak_rss_mb(),
        "version": trl.__version__,
    }


def rate(side: dict) -> float:
    """Answer tokens per second from the end of step 1 to the end of the last step."""
    ends = side["step_ends"]
    return sum(side["answer_tokens"][1 : len(ends)]) / (ends[-1] - ends[0])


def markdown(ours: dict, theirs: dict, context: dict) -> str:
    a, b = rate(ours), rate(theirs)

    def curve(values: list) -> str:
        return ", ".join("—" if v is None else f"{v:.3f}" for v in values)

    return "\n".join(
        [
            f"## grpo: tunelab vs TRL GRPOTrainer (LoRA, SmolLM2-135M, CPU) — {date.today()}",
            "",
            f"Machine: {context['machine']}.",
            "",
            f"Data: {context['steps'] * PROMPTS_PER_STEP} TREC questions from "
            f"{context['source']} as reinforcement items (the label as reference); reward: "
            f"`text_similarity` `fuzzy_match` against it (tunelab's grader on both sides); "
            f"{PROMPTS_PER_STEP} prompts × {GROUP_SIZE} answers per step, at most "
            f"{MAX_ANSWER_TOKENS} answer tokens, temperature {TEMPERATURE}; {context['steps']} "
            f"steps (the first is warm-up); LoRA r={LORA_RANK}, alpha={LORA_ALPHA} on "
            f"{', '.join(LORA_TARGETS)}; lr {LEARNING_RATE} linear to 0; GRPO loss, KL beta "
            f"{KL_BETA}, one pass per rollout; tunelab precision {ours['precision']}, TRL "
            f"{theirs['version']} `GRPOConfig` defaults otherwise (precision "
            f"{theirs['precision']}). Each side in its own process; the machine was "
            f"{context['quiet']} (load {context['load']}) before the runs.",
            "",
            "| | tunelab | TRL GRPOTrainer | tunelab / TRL |",
            "| --- | ---: | ---: | ---: |",
            f"| answer tokens/s after the first step | {a:,.1f} | {b:,.1f} | {a / b:.2f}x |",
            f"| peak RSS (ru_maxrss) | {ours['peak_rss_mb']:,.0f} MB | "
            f"{theirs['peak_rss_mb']:,.0f} MB | "
            f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x |",
            f"| process wall time | {ours['wall_seconds']:.0f} s | "
            f"{theirs['wall_seconds']:.0f} s | |",
            "",
            f"Mean reward per step, tunelab: {curve(ours['rewards'])}",
            "",
            f"Mean reward per step, TRL: {curve(theirs['rewards'])}",
            "",
            f"Speed-up {a / b:.2f}x. The sides sample with different random streams and see "
            "the items in different orders, so their per-step rewards are of different "
            "answers; an answer's tokens are counted by each side's own tokenization of it.",
        ]
    )


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps per side")
    steps = parser.parse_args(list(argv)).steps
    from tunelab.engine.models import load_base

    with tempfile.TemporaryDirectory(prefix="tunelab-bench-grpo-") as tmp:
        tmp = Path(tmp)
        items, source = write_items(tmp, steps * PROMPTS_PER_STEP)
        load_base(MODEL)  # converts the bundled model once, before timing
        quiet, load = wait_until_quiet(), load_average()
        arguments = {side: [str(items), str(tmp / side), str(steps)] for side in ("tunelab", "trl")}
        sides = {
            side: run_child(__file__, side, a, CHILD_TIMEOUT_S) for side, a in arguments.items()
        }
    import peft

    versions = torch_versions(f"peft {peft.__version__}", f"trl {sides['trl']['version']}")
    context = {
        "machine": describe_machine(versions),
        "source": source,
        "steps": steps,
        "quiet": quiet,
        "load": load,
    }
    section = markdown(sides["tunelab"], sides["trl"], context)
    print(section)
    append_results(section)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        side, items, out_dir = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
        run = run_tunelab if side == "tunelab" else run_trl
        print(json.dumps(run(items, out_dir, int(sys.argv[5]))))
    else:
        main(sys.argv[1:])
