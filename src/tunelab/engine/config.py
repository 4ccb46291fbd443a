"""Training configuration: what a user may set, with OpenAI's names and `auto` defaults.

`TrainConfig` is what a user types (each field's docstring becomes its `--help`, as in
litgpt); `TrainConfig.resolve(n_examples, model_context)` checks the whole config at once and
returns a `ResolvedConfig` with every `auto` replaced by a number, so that a run's
`tunelab_config.json` says exactly what was trained.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Final, Literal, TypeGuard, get_args

from tunelab.data.analyze import recommended_epochs
from tunelab.engine.device import (
    Capabilities,
    choose_device,
    choose_precision,
    use_gradient_checkpointing,
)
from tunelab.errors import TunelabError, usage_error

AUTO: Final = "auto"
INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1  # numpy's seed, set with torch's and Python's before training
# The choices of the settings that take a word: their field types, and the CLI's flag types.
Method = Literal["lora", "full"]
Scheduler = Literal["cosine", "linear", "constant"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
# Settings that are switched on or off, or left to auto (packing, group_by_prompt).
Switch = Literal["auto", "on", "off"]
Distributed = Literal["auto", "ddp", "fsdp"]
# OpenAI's `method.type`: what the run optimises (see engine.objectives).
TrainingMethod = Literal["supervised", "dpo", "reinforcement"]
METHODS: tuple[str, ...] = get_args(Method)
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
PRECISIONS: tuple[str, ...] = get_args(Precision)
SWITCH: tuple[str, ...] = get_args(Switch)
DISTRIBUTED: tuple[str, ...] = get_args(Distributed)
TRAINING_METHODS: tuple[str, ...] = get_args(TrainingMethod)
# Full fine-tuning holds fp32 weights, their gradients and AdamW's two moments: 16 bytes a
# parameter before any activation. `distributed=auto` shards (FSDP) a model whose 16 bytes a
# parameter exceed one device's memory.
FULL_TRAINING_BYTES_PER_PARAMETER = 16

# Base learning rates, scaled by `learning_rate_multiplier`. LoRA adapters start at zero and
# live in a low-rank subspace, so they need a step size ~10x larger than full fine-tuning to
# move in the same number of steps. The LoRA/QLoRA papers' common 2e-4 was behind 5e-4 at
# every step measured by benchmarks/recipe_sweep.py (TREC, SmolLM2-135M, RESULTS.md); 1e-3
# was no better than 5e-4 after 180 steps. Full fine-tuning updates every pretrained weight,
# where larger rates quickly erase what the model knew; 2e-5 is the usual SFT rate for models
# of this size (not yet swept).
BASE_LEARNING_RATE = {"lora": 5e-4, "full": 2e-5}
# The largest learning rate accepted, given or made by the multiplier: AdamW moves every
# weight by about the learning rate each step, so a rate past 1 swamps weights of magnitude
# ~0.02-1 at the first step and trains a model that answers nothing (usual rates: 1e-6-1e-3).
MAX_LEARNING_RATE = 1.0
# AdamW's decoupled decay shrinks each weight by learning rate × decay a step; past 1 the
# decay outweighs what the weight is (usual: 0-0.1).
MAX_WEIGHT_DECAY = 1.0
# A LoRA adapter's output is scaled by alpha / rank: an alpha past this overflows the half
# precision activations (usual alphas: 8-512).
MAX_LORA_ALPHA = 10_000
# DPO moves a model that already answers well by small preference margins; the usual rates
# are an order of magnitude below supervised training's (TRL's DPO default is 1e-6 for full
# fine-tuning; LoRA DPO recipes use 5e-6 to 5e-5).
DPO_BASE_LEARNING_RATE = {"lora": 2e-5, "full": 1e-6}
# OpenAI's and TRL's default DPO beta: how far from the reference the model may move.
DEFAULT_DPO_BETA = 0.1
# Reinforcement (GRPO family) moves the model by its own sampled answers, as DPO does by pairs:
# the rates of preference training (TRL's GRPO default is 1e-6 for full fine-tuning; LoRA
# GRPO recipes use 1e-5 to 5e-5).
REINFORCEMENT_BASE_LEARNING_RATE = DPO_BASE_LEARNING_RATE
# TRL's GRPO defaults: the KL penalty's weight and PPO's clipping range of the ratio.
DEFAULT_RL_KL_BETA = 0.04
DEFAULT_RL_CLIP_EPSILON = 0.2
DEFAULT_RL_MAX_ANSWER_TOKENS = 512  # data.method_scan counts an answer's budget the same
# Methods whose loss compares the model with its starting point, kept whole (not sharded).
REFERENCE_METHODS = ("dpo", "reinforcement")
# OpenAI picks a batch of about 0.2% of the examples; capped at 32 so that one step stays
# affordable on a CPU.
AUTO_BATCH_FRACTION = 0.002
MAX_AUTO_BATCH_SIZE = 32
MAX_AUTO_SEQ_LEN = 2048
DEFAULT_WARMUP_RATIO = 0.03
# With a validation set and `--eval-every auto`, about this many evaluations per run.
AUTO_EVALUATIONS = 10
# Validation during training scores a fixed sample of at most this many examples (the same
# ones each time, so the curve is comparable); the last evaluation scores every example.
PERIODIC_EVAL_EXAMPLES = 256
# `eval_every=auto` keeps periodic validation within this share of the training work between
# two evaluations. Scoring an example (forward only) costs about a third of training on it.
MAX_VALIDATION_SHARE = 0.1
FORWARD_SHARE_OF_A_STEP = 1 / 3


@dataclass
class TrainConfig:
    method: Method = "lora"
    """Fine-tuning method: `lora` (small adapter, base weights frozen) or `full`."""
    lora_rank: int = 16
    """LoRA rank r: the adapter's capacity."""
    lora_alpha: float = 32
    """LoRA alpha: the adapter's output is scaled by alpha / rank."""
    lora_dropout: float = 0.05
    """Dropout on the adapter's input during training."""
    lora_target_modules: tuple[str, ...] | None = None
    """Module names to adapt (e.g. q_proj,v_proj); default: every linear layer of the
    transformer blocks (not the embeddings or the output head)."""
    n_epochs: int | str = AUTO
    """Passes over the training data; auto: 3, more for small files, fewer for big ones."""
    batch_size: int | str = AUTO
    """Examples per optimizer step; auto: about 0.2% of the examples, between 1 and 32."""
    learning_rate_multiplier: float | str = AUTO
    """Scales the method's base learning rate (5e-4 for LoRA, 2e-5 for full); auto: 1."""
    learning_rate: float | None = None
    """Exact learning rate; overrides --learning-rate-multiplier."""
    warmup_ratio: float | None = None
    """Fraction of the steps spent warming the learning rate up from 0 (default 0.03)."""
    warmup_steps: int | None = None
    """Warm-up steps; an alternative to --warmup-ratio."""
    lr_scheduler: Scheduler = "cosine"
    """Learning-rate schedule after warm-up: cosine, linear (both decay to 0) or constant."""
    gradient_accumulation_steps: int = 1
    """Split each step's batch into this many forward/backward passes to save memory; the
    update is the same."""
    max_seq_len: int | str = AUTO
    """Tokens per example; longer examples are truncated. auto: the model's context, at most
    2048."""
    seed: int = 42
    """Seed for the data order, the adapter's initialisation and dropout."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (default: all epochs)."""
    eval_every: int | str = AUTO
    """Steps between validation evaluations (with a validation file); auto: about 10 per run.
    Always evaluated at the end."""
    checkpoint_every: int | None = None
    """Also checkpoint every N steps (a checkpoint is always written at each epoch's end)."""
    keep_checkpoints: int = 2
    """How many of the latest checkpoints to keep."""
    weight_decay: float = 0.0
    """AdamW weight decay on weight matrices (never on norms or biases)."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient norm to this value (none: no clipping)."""
    precision: Precision = AUTO
    """Compute precision: bf16 or fp16 autocast (trained weights stay fp32; fp16 with loss
    scaling, CUDA only) or fp32; auto: bf16 where the GPU (compute capability 8.0+) or CPU
    (AMX) computes it fast, fp16 on older GPUs, else fp32."""
    gradient_checkpointing: bool | str = AUTO
    """Recompute activations during the backward pass to save memory (slower steps); auto:
    on for models of 1B parameters or more."""
    load_in_4bit: bool = False
    """QLoRA: keep the frozen base weights in 4 bits (NF4, bitsandbytes; CUDA only, with
    --method lora)."""
    use_liger_kernel: bool = False
    """Liger's fused Triton kernels (RMSNorm, RoPE, SwiGLU; CUDA only, pip install
    liger-kernel)."""
    packing: Switch = AUTO
    """Sequence packing: on puts several examples in each row (no attention across them)
    instead of padding each to the longest; auto: off (length bucketing already leaves little
    padding, and packed rows lose the fast causal attention kernel on CPU)."""
    group_by_prompt: Switch = AUTO
    """on: fill each batch with examples whose prompts start alike (the same schema or
    instructions before each question), so that the shared part is computed once per batch
    instead of once per row; off: random batches of similar length; auto: off."""
    training_method: TrainingMethod = "supervised"
    """What the run optimises (OpenAI's method.type): supervised (the answers' tokens), dpo
    (preference pairs: the preferred answer over the other, against the starting model) or
    reinforcement (the model's own sampled answers, scored by --grader: GRPO)."""
    dpo_beta: float = DEFAULT_DPO_BETA
    """DPO's beta: higher keeps the model closer to where it started."""
    rl_group_size: int = 4
    """Reinforcement: answers sampled per prompt at each step; each is rewarded against the
    others of its group."""
    rl_max_answer_tokens: int = DEFAULT_RL_MAX_ANSWER_TOKENS
    """Reinforcement: the most tokens a sampled answer may have."""
    rl_temperature: float = 1.0
    """Reinforcement: the sampling temperature of the answers (higher: more varied groups)."""
    rl_kl_beta: float = DEFAULT_RL_KL_BETA
    """Reinforcement: weight of the KL penalty to the starting model (0: none)."""
    rl_clip_epsilon: float = DEFAULT_RL_CLIP_EPSILON
    """Reinforcement: how far the new-to-old probability ratio may move before the policy
    loss is clipped (PPO's epsilon)."""
    distributed: Distributed = AUTO
    """With several processes (--nproc-per-node): ddp keeps a whole copy of the model in each;
    fsdp (--method full only) shards weights, gradients and optimizer state across them, for
    models that do not fit one device; auto: fsdp when full fine-tuning needs more than one
    device's memory (16 bytes a parameter), else ddp."""

    @classmethod
    def from_settings(cls, settings: dict) -> TrainConfig:
        """The config that flag-style settings describe: `auto` keeps the field's default,
        `lora_target_modules` may be a comma-separated string. Unknown names are refused."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise usage_error(
                "invalid_config",
                f"unknown setting(s): {', '.join(unknown)}.",
                hint="`tunelab train --help` lists every setting",
            )
        given = {k: v for k, v in settings.items() if v != AUTO}
        modules = given.get("lora_target_modules")
        if isinstance(modules, str):
            given["lora_target_modules"] = tuple(m.strip() for m in modules.split(",") if m.strip())
        elif isinstance(modules, list):
            given["lora_target_modules"] = tuple(modules)
        config = cls(**given)
        config.validate()
        return config

    def problems(self) -> list[str]:
        """Every invalid setting, each in terms of the flag a user types."""
        found = [
            *_choice("method", self.method, METHODS),
            *_choice("lr-scheduler", self.lr_scheduler, SCHEDULERS),
            *_choice("precision", self.precision, PRECISIONS),
            *_choice("packing", self.packing, SWITCH),
            *_choice("group-by-prompt", self.group_by_prompt, SWITCH),
            *_choice("distributed", self.distributed, DISTRIBUTED),
            *_choice("training-method", self.training_method, TRAINING_METHODS),
            *_number("dpo-beta", self.dpo_beta, minimum=0, maximum=100, strict=True),
            *self._reinforcement_problems(),
            *_number("lora-rank", self.lora_rank, minimum=1, integer=True),
            *_number("lora-alpha", self.lora_alpha, minimum=0, maximum=MAX_LORA_ALPHA, strict=True),
            *_number("lora-dropout", self.lora_dropout, minimum=0, maximum=1, below_max=True),
            *_number("n-epochs", self.n_epochs, minimum=1, integer=True, auto=True),
            *_number("batch-size", self.batch_size, minimum=1, integer=True, auto=True),
            *_number(
                "learning-rate-multiplier",
                self.learning_rate_multiplier,
                minimum=0,
                strict=True,
                auto=True,
            ),
            *_number(
                "learning-rate",
                self.learning_rate,
                minimum=0,
                maximum=MAX_LEARNING_RATE,
                strict=True,
                none=True,
            ),
            *_number("warmup-ratio", self.warmup_ratio, minimum=0, maximum=1, none=True),
            *_number("warmup-steps", self.warmup_steps, minimum=0, integer=True, none=True),
            *_number(
                "gradient-accumulation-steps",
                self.gradient_accumulation_steps,
                minimum=1,
                integer=True,
            ),
            *_number("max-seq-len", self.max_seq_len, minimum=2, integer=True, auto=True),
            *_number("seed", self.seed, minimum=0, maximum=SEED_MAX, integer=True),
            *_number("max-steps", self.max_steps, minimum=1, integer=True, none=True),
            *_number("eval-every", self.eval_every, minimum=1, integer=True, auto=True),
            *_number("checkpoint-every", self.checkpoint_every, minimum=1, integer=True, none=True),
            *_number("keep-checkpoints", self.keep_checkpoints, minimum=1, integer=True),
            *_number("weight-decay", self.weight_decay, minimum=0, maximum=MAX_WEIGHT_DECAY),
            *_number("max-grad-norm", self.max_grad_norm, minimum=0, strict=True, none=True),
        ]
        found += self._conflicts() + self._multiplied_rate()
        found += [
            f"--{name.replace('_', '-')} must be true or false (got {value!r})"
            for name, value in (
                ("gradient_checkpointing", self.gradient_checkpointing),
                ("load_in_4bit", self.load_in_4bit),
                ("use_liger_kernel", self.use_liger_kernel),
            )
            if not isinstance(value, bool)
            and not (name == "gradient_checkpointing" and value == AUTO)
        ]
        if self.load_in_4bit is True and self.method != "lora":
            found.append("--load-in-4bit needs --method lora: 4-bit weights cannot be trained")
        if self.distributed == "fsdp" and self.method != "full":
            found.append(
                "--distributed fsdp shards full fine-tuning (--method full); LoRA "
                "trains with ddp: its frozen base is shared and its adapter small"
            )
        if self.training_method in REFERENCE_METHODS and self.distributed == "fsdp":
            found.append(
                f"--training-method {self.training_method} trains with ddp: its reference "
                "model is not sharded"
            )
        if self.distributed == "fsdp" and self.precision == "fp16":
            found.append(
                "--distributed fsdp trains in bf16 or fp32, not fp16 (its loss "
                "scaling does not handle sharded gradients)"
            )
        return found

    def _reinforcement_problems(self) -> list[str]:
        return [
            *_number("rl-group-size", self.rl_group_size, minimum=2, integer=True),
            *_number("rl-max-answer-tokens", self.rl_max_answer_tokens, minimum=1, integer=True),
            *_number("rl-temperature", self.rl_temperature, minimum=0, maximum=100, strict=True),
            *_number("rl-kl-beta", self.rl_kl_beta, minimum=0, maximum=100),
            *_number("rl-clip-epsilon", self.rl_clip_epsilon, minimum=0, maximum=1, strict=True),
        ]

    def _conflicts(self) -> list[str]:
        found = []
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            found.append("Can't provide both --warmup-ratio and --warmup-steps. Choose one.")
        multiplier_set = self.learning_rate_multiplier != AUTO
        if self.learning_rate is not None and multiplier_set:
            found.append(
                "Can't provide both --learning-rate and --learning-rate-multiplier. Choose one."
            )
        if self.lora_target_modules is not None and (
            not self.lora_target_modules
            or not all(isinstance(m, str) and m for m in self.lora_target_modules)
        ):
            found.append("--lora-target-modules must be a list of module names")
        batch, accumulation = self.batch_size, self.gradient_accumulation_steps
        if _is_int(batch) and _is_int(accumulation) and 1 <= batch < accumulation:
            found.append(
                f"--batch-size ({batch}) must be at least --gradient-accumulation-steps "
                f"({accumulation}): each accumulation step needs an example"
            )
        return found

    def _multiplied_rate(self) -> list[str]:
        """The multiplier's rate within MAX_LEARNING_RATE, as a given rate must be."""
        multiplier, base = self.learning_rate_multiplier, self._base_rate()
        if not isinstance(multiplier, (int, float)) or isinstance(multiplier, bool) or not base:
            return []  # auto, or a value `problems` already reports
        rate = base * multiplier
        if not math.isfinite(rate) or rate <= MAX_LEARNING_RATE:
            return []
        return [
            f"--learning-rate-multiplier {multiplier:g} makes a learning rate of {rate:g} "
            f"(--method {self.method}'s {base:g} × {multiplier:g}); it must be ≤ "
            f"{MAX_LEARNING_RATE:g}"
        ]

    def validate(self) -> None:
        """Raise one `invalid_config` TunelabError listing every problem, if there are any."""
        found = self.problems()
        if found:
            raise usage_error(
                "invalid_config",
                "invalid training configuration: " + "; ".join(found),
                hint="fix the flags above; `tunelab train --help` describes each one",
            )

    def resolve(
        self,
        n_examples: int,
        model_context: int | None,
        device: str | None = None,
        n_parameters: int | None = None,
        n_val_examples: int = 0,
        group_sizes: Sequence[int] | None = None,
    ) -> ResolvedConfig:
        """The config with every `auto` replaced, for `n_examples` training examples.

        `model_context` is the model's maximum sequence length (None if unknown); `device`
        ("cpu" or "cuda"; default: cuda when available) decides what `precision=auto` means,
        the model's `n_parameters` what `gradient_checkpointing=auto` means, the number of
        validation examples what `eval_every=auto` means, the sizes of the prompt groups
        (`--group-by-prompt on`: see engine.batching) how many steps an epoch has.
        """
        self.validate()
        if n_examples < 1:
            raise TunelabError(
                "no_training_examples",
                "the training data has no example with an assistant message to train on.",
                hint="check the file with `tunelab validate`",
            )
        batch_size = self._batch_size(n_examples)
        n_epochs = recommended_epochs(n_examples) if self.n_epochs == AUTO else self.n_epochs
        steps_per_epoch, total_steps = self.step_counts(n_examples, group_sizes)
        settings = asdict(self)
        settings.update(
            n_epochs=n_epochs,
            batch_size=batch_size,
            learning_rate_multiplier=self._multiplier(),
            learning_rate=self._learning_rate(),
            warmup_steps=self._warmup_steps(total_steps),
            warmup_ratio=None,
            max_seq_len=self.resolved_max_seq_len(model_context),
            eval_every=self._eval_every(total_steps, batch_size, n_val_examples),
            precision=resolve_precision(self.precision, device),
            gradient_checkpointing=use_gradient_checkpointing(
                self.gradient_checkpointing, n_parameters or 0
            ),
            packing="off" if self.packing == AUTO else self.packing,
            group_by_prompt="off" if self.group_by_prompt == AUTO else self.group_by_prompt,
            distributed=self._distributed(n_parameters, device),
        )
        if settings["distributed"] == "fsdp" and settings["precision"] == "fp16":
            settings["precision"] = "fp32"  # auto on a GPU without bf16: see problems()
        return ResolvedConfig(
            **settings,
            n_examples=n_examples,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
        )

    def step_counts(
        self, n_examples: int, group_sizes: Sequence[int] | None = None
    ) -> tuple[int, int]:
        """(steps per epoch, total steps) for `n_examples`: `--max-steps` caps the total.
        With `--group-by-prompt on` and the data's `group_sizes`, a group's leftovers make
        batches of their own, so an epoch can have a few more steps."""
        from tunelab.engine.batching import batches_per_epoch  # imports torch: config does not

        n_epochs = self.n_epochs if _is_int(self.n_epochs) else recommended_epochs(n_examples)
        grouped = group_sizes if self.group_by_prompt == "on" else None
        steps_per_epoch = batches_per_epoch(n_examples, self._batch_size(n_examples), grouped)
        total_steps = steps_per_epoch * n_epochs
        if self.max_steps is not None:
            total_steps = min(total_steps, self.max_steps)
        return steps_per_epoch, total_steps

    def _distributed(self, n_parameters: int | None, device: str | None) -> str:
        if self.training_method in REFERENCE_METHODS and self.distributed == AUTO:
            return "ddp"  # its reference model is not sharded (see problems())
        return resolve_distributed(self.distributed, self.method, n_parameters, device)

    def _batch_size(self, n_examples: int) -> int:
        if _is_int(self.batch_size):  # validated: an integer, or auto
            return self.batch_size
        by_size = min(MAX_AUTO_BATCH_SIZE, max(1, round(n_examples * AUTO_BATCH_FRACTION)))
        return max(by_size, self.gradient_accumulation_steps)

    def _multiplier(self) -> float:
        multiplier = self.learning_rate_multiplier
        return 1.0 if multiplier == AUTO else float(multiplier)

    def _learning_rate(self) -> float:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return (self._base_rate() or 0.0) * self._multiplier()

    def _base_rate(self) -> float | None:
        """The learning rate a multiplier of 1 means, for the method (None: not one)."""
        table = {
            "dpo": DPO_BASE_LEARNING_RATE,
            "reinforcement": REINFORCEMENT_BASE_LEARNING_RATE,
        }.get(self.training_method, BASE_LEARNING_RATE)
        return table.get(self.method)

    def _warmup_steps(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        ratio = DEFAULT_WARMUP_RATIO if self.warmup_ratio is None else self.warmup_ratio
        return round(ratio * total_steps)

    def resolved_max_seq_len(self, model_context: int | None) -> int:
        """--max-seq-len with auto replaced (needed before the data is tokenized)."""
        if _is_int(self.max_seq_len):  # validated: an integer, or auto
            return self.max_seq_len
        return min(model_context or MAX_AUTO_SEQ_LEN, MAX_AUTO_SEQ_LEN)

    def eval_interval(self, total_steps: int, n_examples: int, n_val_examples: int) -> int:
        """--eval-every with auto replaced, for a run of `total_steps` on `n_examples`."""
        return self._eval_every(total_steps, self._batch_size(n_examples), n_val_examples)

    def _eval_every(self, total_steps: int, batch_size: int, n_val_examples: int) -> int:
        """About AUTO_EVALUATIONS per run, but never so often that validating the periodic
        sample costs more than MAX_VALIDATION_SHARE of the training between two of them (a
        small run with batches of one would otherwise validate at every step)."""
        if _is_int(self.eval_every):  # validated: an integer, or auto
            return self.eval_every
        every = max(1, total_steps // AUTO_EVALUATIONS)
        sample = min(n_val_examples, PERIODIC_EVAL_EXAMPLES)
        examples_per_step = batch_size * self.gradient_accumulation_steps
        affordable = sample * FORWARD_SHARE_OF_A_STEP / (MAX_VALIDATION_SHARE * examples_per_step)
        return max(every, math.ceil(affordable))


@dataclass
class ResolvedConfig(TrainConfig):
    """A `TrainConfig` with no `auto` left, plus the step counts it implies."""

    # The settings `resolve` decides, with the types they then have (keyword-only and
    # required: a resolved config names each; they keep their place in `fields`).
    n_epochs: int = field(kw_only=True)
    batch_size: int = field(kw_only=True)
    learning_rate_multiplier: float = field(kw_only=True)
    learning_rate: float = field(kw_only=True)
    warmup_steps: int = field(kw_only=True)
    max_seq_len: int = field(kw_only=True)
    eval_every: int = field(kw_only=True)
    gradient_checkpointing: bool = field(kw_only=True)
    n_examples: int = 0
    steps_per_epoch: int = 0
    total_steps: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["lora_target_modules"] is not None:
            data["lora_target_modules"] = list(data["lora_target_modules"])
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ResolvedConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("lora_target_modules") is not None:
            values["lora_target_modules"] = tuple(values["lora_target_modules"])
        return cls(**values)


def resolve_precision(precision: str, device: str | None = None) -> str:
    """`bf16`, `fp16` or `fp32` on `device` (default: CUDA when present); see engine.device."""
    caps = Capabilities.detect()
    return choose_precision(precision, choose_device(device, caps), caps)


def resolve_distributed(
    requested: str, method: str, n_parameters: int | None, device: str | None
) -> str:
    """`ddp` or `fsdp`: auto shards full fine-tuning only when it cannot fit one device."""
    if requested != AUTO:
        return requested
    if method != "full" or not n_parameters:
        return "ddp"
    memory = device_memory(device)
    needed = n_parameters * FULL_TRAINING_BYTES_PER_PARAMETER
    return "fsdp" if memory is not None and needed > memory else "ddp"


def device_memory(device: str | None) -> int | None:
    """Bytes one rank may use: a GPU's memory, or the RAM shared by this machine's ranks."""
    # torch: loaded where it is used, so engine.config and light commands stay light
    import torch

    if choose_device(device, Capabilities.detect()).startswith("cuda"):
        return torch.cuda.get_device_properties(0).total_memory
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None
    return ram // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def field_help() -> dict[str, str]:
    """Each `TrainConfig` field's docstring, one line, for `--help` texts."""
    tree = ast.parse(inspect.getsource(TrainConfig))
    cls = tree.body[0]
    assert isinstance(cls, ast.ClassDef)  # the source of a class is its definition
    helps = {}
    for node, following in itertools.pairwise(cls.body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            doc = following.value.value
            if isinstance(doc, str):
                helps[node.target.id] = " ".join(doc.split())
    return helps


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(flag: str, value: object, choices: tuple[str, ...]) -> list[str]:
    if value in choices:
        return []
    return [f"--{flag} must be one of {', '.join(choices)} (got {value!r})"]


def _number(
    flag: str,
    value: object,
    *,
    minimum: float,
    maximum: float | None = None,
    integer: bool = False,
    strict: bool = False,
    below_max: bool = False,
    auto: bool = False,
    none: bool = False,
) -> list[str]:
    """A problem message when `value` is not a number in range (or `auto`/unset if allowed)."""
    if (auto and value == AUTO) or (none and value is None):
        return []
    number = value if _is_int(value) or (not integer and isinstance(value, float)) else None
    ok = (
        number is not None
        and math.isfinite(number)
        and (number > minimum if strict else number >= minimum)
    )
    if ok and integer and maximum is None:
        maximum = INT32_MAX  # any count past 32 bits is a mistake that would overflow later
    if ok and number is not None and maximum is not None:
        ok = number < maximum if below_max else number <= maximum
    if ok:
        return []
    kind = "an integer" if integer else "a number"
    bound = f"> {minimum}" if strict else f"≥ {minimum}"
    if maximum is not None:
        bound += f" and {'<' if below_max else '≤'} {maximum}"
    return [f"--{flag} must be {kind} {bound}{' or auto' if auto else ''} (got {value!r})"]
