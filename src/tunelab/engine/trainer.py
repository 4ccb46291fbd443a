"""The training loop: a config and a dataset in, a trained adapter or model out.

`train()` reads top to bottom: tokenize and resolve the config, prepare the output directory
(or find the checkpoint to resume from), make the model trainable, run the steps, write the
output. It knows nothing of the CLI, providers or the registry; progress goes to `callback`
as one `StepRecord` per step, and its metrics are appended to `metrics.jsonl`.

The loss of a step is the mean over every trained token of every example in the step,
whatever the padding and however the batch is split into gradient-accumulation micro-batches.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import numpy as np
import orjson
import torch

from tunelab import cores
from tunelab.curves import LOSS_CURVE_FILE, loss_svg, read_metrics
from tunelab.data.example import ChatExample
from tunelab.data.preference import PreferenceExample, read_preference_file
from tunelab.data.reinforcement import ReinforcementItem, read_reinforcement_file
from tunelab.engine.batching import epoch_batches, micro_batches
from tunelab.engine.checkpoint import (
    METRICS_FILE,
    Position,
    check_resumable,
    latest_checkpoint,
    load_checkpoint,
    prepare_output_dir,
    read_checkpoint_meta,
    save_checkpoint,
    truncate_metrics,
    write_output,
)
from tunelab.engine.config import PERIODIC_EVAL_EXAMPLES, ResolvedConfig, TrainConfig
from tunelab.engine.dataset import TokenizedDataset, read_chat_jsonl, tokenize_examples
from tunelab.engine.device import Capabilities, check_optional_features, choose_device
from tunelab.engine.distributed import Ranks, stop
from tunelab.engine.lora import prepare_model, trainable_parameters
from tunelab.engine.memory import release_freed_memory, resident_memory
from tunelab.engine.objectives import Measured, Objective, objective_for
from tunelab.engine.preference import PairDataset, tokenize_pairs
from tunelab.engine.reinforcement import ItemDataset, Reward, SamplingWatch, tokenize_items
from tunelab.engine.sharding import (
    clip_gradients,
    evaluation_mode,
    even_share,
    gather_full_state,
    is_sharded,
    shard_model,
)
from tunelab.engine.steps import StepRecord
from tunelab.errors import Interrupted, TunelabError, check_cancel
from tunelab.io import atomic_write_text
from tunelab.throughput import estimate_seconds, record_throughput

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tunelab.engine.models import CausalLM

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# Chat examples for supervised training, preference pairs for DPO, reinforcement items, or a
# JSONL file of any of them.
Examples = (
    Sequence[ChatExample] | Sequence[PreferenceExample] | Sequence[ReinforcementItem] | str | Path
)
# What the loop trains on: tokenized examples, tokenized pairs, or tokenized prompts.
TrainingData = TokenizedDataset | PairDataset | ItemDataset
Callback = Callable[[StepRecord], None]
Model = TypeVar("Model", bound=torch.nn.Module)


class Cancel(Protocol):
    """Asked before every step whether to stop (a `threading.Event`, or the ranks' stop file);
    a single process also asks between micro-batches and while sampling answers."""

    def is_set(self) -> bool: ...


@dataclass
class TrainResult:
    status: str  # "succeeded" or "cancelled"
    output_dir: Path
    step: int
    total_steps: int
    train_loss: float | None
    val_loss: float | None
    val_mean_token_accuracy: float | None
    # Supervised: the share of validation examples whose whole answer the model predicts.
    val_answer_accuracy: float | None
    tokens_per_second: float | None
    elapsed_seconds: float
    last_checkpoint: Path | None
    resumed_from_step: int | None
    dataset: dict

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["last_checkpoint"] = str(self.last_checkpoint) if self.last_checkpoint else None
        return data


def prepare_data(
    tokenizer,
    train_examples: Examples,
    val_examples: Examples | None,
    config: TrainConfig,
    model_context: int | None,
    device: str | None = None,
    n_parameters: int | None = None,
) -> tuple[ResolvedConfig, TrainingData, TrainingData | None]:
    """Tokenize the data and resolve the config against it (checks the config first)."""
    config.validate()
    max_seq_len = config.resolved_max_seq_len(model_context)
    train_set = _tokenize(train_examples, tokenizer, max_seq_len, config)
    val_set = (
        None if val_examples is None else _tokenize(val_examples, tokenizer, max_seq_len, config)
    )
    n_val = len(val_set.examples) if val_set is not None else 0
    groups = train_set.prompt_groups if config.group_by_prompt == "on" else None
    resolved = config.resolve(
        len(train_set.examples),
        model_context,
        device,
        n_parameters,
        n_val_examples=n_val,
        group_sizes=[len(group) for group in groups] if groups is not None else None,
    )
    return resolved, train_set, val_set


def _tokenize(examples: Examples, tokenizer, max_seq_len: int, config: TrainConfig) -> TrainingData:
    path = examples if isinstance(examples, (str, Path)) else None
    if config.training_method == "reinforcement":
        items = read_reinforcement_file(path) if path is not None else examples
        return tokenize_items(
            cast("Sequence[ReinforcementItem]", items),
            tokenizer,
            max_seq_len,
            config.rl_max_answer_tokens,
        )
    if config.training_method == "dpo":
        read = read_preference_file(path) if path is not None else examples
        return tokenize_pairs(
            cast("Sequence[PreferenceExample]", read), tokenizer, max_seq_len, path
        )
    chats = read_chat_jsonl(path) if path is not None else examples
    return tokenize_examples(cast("Sequence[ChatExample]", chats), tokenizer, max_seq_len, path)


def plan(
    tokenizer,
    train_examples: Examples,
    val_examples: Examples | None = None,
    config: TrainConfig | None = None,
    *,
    model_context: int | None = None,
    base_model: str | None = None,
    device: str | None = None,
) -> dict:
    """What `train` would do, without training: data, steps, hyperparameters, time."""
    resolved, train_set, val_set = prepare_data(
        tokenizer, train_examples, val_examples, config or TrainConfig(), model_context, device
    )
    stats = train_set.stats()
    # Every example is seen once per epoch; max_steps may stop the run early.
    tokens = round(stats["total_tokens"] * resolved.total_steps / resolved.steps_per_epoch)
    eval_tokens = ValidationPlan(val_set, resolved).tokens_from(1)
    estimate = (
        estimate_seconds(base_model, throughput_key(resolved), tokens, eval_tokens)
        if base_model
        else None
    )
    seconds, measured = estimate or (None, None)
    return {
        "base_model": base_model,
        "train": stats,
        "val": val_set.stats() if val_set else None,
        "steps_per_epoch": resolved.steps_per_epoch,
        "total_steps": resolved.total_steps,
        "tokens_to_process": tokens,
        "validation_tokens_to_process": eval_tokens,
        "config": resolved.to_dict(),
        "estimated_seconds": seconds,
        "throughput": measured,
    }


def train(
    model: PreTrainedModel,
    tokenizer,
    train_examples: Examples,
    val_examples: Examples | None,
    config: TrainConfig | None,
    output_dir: str | Path,
    *,
    base_model: str | None = None,
    metadata: dict | None = None,
    callback: Callback | None = None,
    cancel: Cancel | None = None,
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    on_validation: Callable[[int, int], None] | None = None,
    reward: Reward | None = None,
    on_sampling: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Fine-tune `model` (a transformers causal LM, modified in place) on chat examples.

    `train_examples`/`val_examples` are `ChatExample`s or the path of a chat JSONL file
    (preference pairs for `training_method="dpo"`; reinforcement items, whose answers
    `reward` scores, for `"reinforcement"`); `config` None means every default.
    `base_model` names the base model in the output and in the throughput record;
    `metadata` is stored as is in `tunelab_config.json`. `cancel` is checked before every
    step and between validation batches (in a single process also between micro-batches and
    after every token of reinforcement's sampling, the step then dropped): once set, the run
    checkpoints (its last complete step) and returns with status "cancelled".
    `on_validation(done, total)` reports each validation pass's batches, `on_sampling(done,
    total)` the answers reinforcement has sampled of a micro-batch's. With `resume`, the run
    continues from the last complete checkpoint in `output_dir` (or starts afresh when there
    is none).
    """
    config = config or TrainConfig()
    config.validate()
    output_dir = Path(output_dir)
    caps = Capabilities.detect()
    ranks = Ranks.from_env()
    on = torch.device(ranks.device(choose_device(device, caps)))
    started = ranks.start(str(on))
    try:
        return _train(
            model,
            tokenizer,
            train_examples,
            val_examples,
            config,
            output_dir,
            base_model=base_model,
            metadata=metadata,
            callback=callback,
            cancel=cancel,
            resume=resume,
            force=force,
            device=on,
            caps=caps,
            ranks=ranks,
            on_validation=on_validation,
            reward=reward,
            on_sampling=on_sampling,
        )
    finally:
        stop(started)


def _train(
    model: PreTrainedModel,
    tokenizer,
    train_examples: Examples,
    val_examples: Examples | None,
    config: TrainConfig,
    output_dir: Path,
    *,
    base_model: str | None,
    metadata: dict | None,
    callback: Callback | None,
    cancel: Cancel | None,
    resume: bool,
    force: bool,
    device: torch.device,
    caps: Capabilities,
    ranks: Ranks,
    on_validation: Callable[[int, int], None] | None,
    reward: Reward | None,
    on_sampling: Callable[[int, int], None] | None,
) -> TrainResult:
    began = time.perf_counter()
    check_optional_features(
        load_in_4bit=config.load_in_4bit,
        liger=config.use_liger_kernel,
        device=device.type,
        caps=caps,
    )
    context = getattr(model.config, "max_position_embeddings", None)
    n_parameters = sum(p.numel() for p in model.parameters())
    resolved, train_set, val_set = prepare_data(
        tokenizer, train_examples, val_examples, config, context, device.type, n_parameters
    )
    checkpoint = _prepare_output(output_dir, resume, force, ranks, model)
    fingerprint = train_set.fingerprint()
    run_info = {
        "base_model": base_model,
        "data_fingerprint": fingerprint,
        "dataset": {"train": train_set.stats(), "val": val_set.stats() if val_set else None},
        "metadata": metadata or {},
    }
    if checkpoint is not None:
        check_resumable(checkpoint, resolved, fingerprint)
    _seed_everything(resolved.seed)  # before the adapter's random initialisation
    sharded = resolved.distributed == "fsdp" and ranks.active
    # A sharded model moves to the device shard by shard: it may not fit there whole.
    trained = prepare_model(model if sharded else _on_device(model, device), resolved)
    if sharded:
        trained = shard_model(trained, device, ranks)
    trained.train()
    # Before a checkpoint's weights are loaded: a full fine-tune's reference is its start.
    # Ranks sample in step with each other: only a single process stops while sampling.
    watch = SamplingWatch(
        cancel=None if ranks.active else cancel,
        progress=on_sampling if ranks.is_main else None,
    )
    objective = objective_for(resolved, trained, tokenizer, reward, watch)
    optimizer = _optimizer(trained, resolved)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(resolved))
    scaler = grad_scaler(resolved.precision, device)
    start = Position(0, 0, 0)
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, trained, optimizer, scheduler, scaler)
    if ranks.is_main:
        truncate_metrics(output_dir / METRICS_FILE, start.step)
    loop = _Loop(
        model=trained,
        objective=objective,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        config=resolved,
        train_set=train_set,
        val_set=val_set,
        run_dir=output_dir,
        run_info=run_info,
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        device=device,
        callback=callback if ranks.is_main else None,
        cancel=cancel,
        ranks=ranks,
        on_validation=on_validation,
    )
    with cores.computing() as share:  # a fair share of the cores, re-checked every few steps
        loop.share = share
        status, position = loop.run(start)
    if ranks.is_main:
        write_loss_curve(output_dir)
    result = loop.result(status, position, start, checkpoint is not None)
    # A sharded model's weights are gathered by every rank together.
    weights = gather_full_state(trained).model if status == "succeeded" and sharded else None
    if status == "succeeded" and ranks.is_main:
        write_output(trained, tokenizer, output_dir, resolved, run_info, result.to_dict(), weights)
        if base_model and result.tokens_per_second:
            record_throughput(
                base_model,
                throughput_key(resolved),
                tokens_per_second=result.tokens_per_second,
                device=device.type,
                eval_tokens_per_second=loop.eval_tokens_per_second(),
                overhead_seconds=time.perf_counter() - began - loop.compute_seconds(),
            )
    return result


def throughput_key(config: ResolvedConfig) -> str:
    """What a run's measured speed is recorded under: the adapter method, and the training
    method when it is not supervised (a DPO step also runs the reference over both answers)."""
    if config.training_method == "supervised":
        return config.method
    return f"{config.method}-{config.training_method}"


def write_loss_curve(run_dir: Path) -> None:
    """`loss.svg` beside `metrics.jsonl`: redrawn at each checkpoint and when the run ends."""
    svg = loss_svg(read_metrics(run_dir / METRICS_FILE), title=f"training loss: {run_dir.name}")
    if svg:
        atomic_write_text(run_dir / LOSS_CURVE_FILE, svg)


class ValidationPlan:
    """Which validation examples each evaluation scores, and what the remaining ones cost.

    Evaluations every `eval_every` steps score a fixed sample (bounded, so that validating
    stays a small part of a run); the one at the last step scores every example.
    """

    def __init__(self, val_set: TrainingData | None, config: ResolvedConfig) -> None:
        self.config = config
        n = len(val_set.examples) if val_set is not None else 0
        self.lengths = val_set.lengths if val_set is not None else []
        everything = list(range(n))
        self.sample = (
            everything
            if n <= PERIODIC_EVAL_EXAMPLES
            else sorted(random.Random(config.seed).sample(everything, PERIODIC_EVAL_EXAMPLES))
        )

    def due(self, step: int) -> bool:
        total = self.config.total_steps
        return bool(self.lengths) and (step % self.config.eval_every == 0 or step == total)

    def examples(self, step: int) -> list[int]:
        if step == self.config.total_steps:
            return list(range(len(self.lengths)))
        return self.sample

    def tokens_from(self, step: int) -> int:
        """Tokens the evaluations at `step` and after will process."""
        total, every = self.config.total_steps, self.config.eval_every
        if not self.lengths or step > total:
            return 0
        periodic = (total - 1) // every - (step - 1) // every
        sample_tokens = sum(self.lengths[i] for i in self.sample)
        return periodic * sample_tokens + sum(self.lengths)


@dataclass
class _Loop:
    """The steps of one run (or of its resumption), with their logging and checkpoints."""

    model: CausalLM
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    config: ResolvedConfig
    train_set: TrainingData
    val_set: TrainingData | None
    run_dir: Path
    run_info: dict
    pad_id: int
    device: torch.device
    callback: Callback | None
    cancel: Cancel | None
    ranks: Ranks = field(default_factory=Ranks)
    on_validation: Callable[[int, int], None] | None = None
    # Measured over this session only: a resumed run's speed is its own.
    session_start: float = field(default_factory=time.perf_counter)
    step_seconds: float = 0.0
    tokens_seen: int = 0
    steps_done: int = 0
    eval_seconds: float = 0.0
    eval_tokens: int = 0
    last_record: StepRecord | None = None
    last_checkpoint: Path | None = None
    share: cores.Share | None = None
    parameters: list[torch.nn.Parameter] = field(init=False)
    validation: ValidationPlan = field(init=False)
    sharded: bool = field(init=False)
    # With --group-by-prompt on: the examples whose prompts start alike (batching.prompt_groups).
    groups: list[list[int]] | None = field(init=False)

    def __post_init__(self) -> None:
        self.parameters = trainable_parameters(self.model)
        self.sharded = is_sharded(self.model)
        self.validation = ValidationPlan(self.val_set, self.config)
        grouped = self.config.group_by_prompt == "on"
        self.groups = self.train_set.prompt_groups if grouped else None

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def check_cancel_within_step(self) -> None:
        """Raise `Interrupted` once cancelled; ranks sum their micro-batches (and validation
        batches) at the end, so only a single process stops part-way."""
        if not self.ranks.active:
            check_cancel(self.cancel)

    def compute_seconds(self) -> float:
        """Time spent in optimizer steps and validation passes (the rest is overhead)."""
        return self.step_seconds + self.eval_seconds

    def eval_tokens_per_second(self) -> float | None:
        return self.eval_tokens / self.eval_seconds if self.eval_seconds else None

    def run(self, start: Position) -> tuple[str, Position]:
        config, position = self.config, start
        for epoch in range(start.epoch, config.n_epochs):
            batches = epoch_batches(
                self.train_set.lengths, config.batch_size, config.seed, epoch, self.groups
            )
            first = start.step_in_epoch if epoch == start.epoch else 0
            for index in range(first, len(batches)):
                # On every rank together (a collective): also after the last step, e.g. when
                # Ctrl-C came during its validation.
                if self.ranks.any(self.cancelled(), self.device):
                    self.checkpoint(position)
                    return "cancelled", position
                if position.step >= config.total_steps:
                    return "succeeded", position
                try:
                    record = self.train_step(batches[index], position.step + 1, epoch, start)
                except Interrupted:  # cancelled part-way: the step is dropped, never applied
                    self.optimizer.zero_grad(set_to_none=True)
                    self.checkpoint(position)
                    return "cancelled", position
                end_of_epoch = index == len(batches) - 1
                position = Position(
                    position.step + 1,
                    epoch + 1 if end_of_epoch else epoch,
                    0 if end_of_epoch else index + 1,
                    record.elapsed,
                )
                self.after_step(record, position, end_of_epoch)
        stopped = not self.ranks.active and self.cancelled()  # during the final validation
        validated = self.last_record is not None and self.last_record.validated
        if stopped and not validated and self.val_set is not None:
            self.checkpoint(position)
            return "cancelled", position
        return "succeeded", position

    def train_step(self, batch: list[int], step: int, epoch: int, start: Position) -> StepRecord:
        threads = self.share.rebalance() if self.share is not None else torch.get_num_threads()
        began = time.perf_counter()
        n_micro = self.config.gradient_accumulation_steps * self.ranks.world_size
        every = micro_batches(batch, self.train_set.lengths, n_micro)
        groups = even_share(every, self.ranks) if self.sharded else self.ranks.mine(every)
        examples, objective = self.train_set.examples, self.objective
        # A padding pass (None) recomputes the step's first micro-batch and counts zero.
        parts = [[examples[i] for i in g or every[0]] for g in groups]
        # The whole step's count, on every rank: each rank's share of the mean loss.
        n_units = objective.units([examples[i] for i in batch])
        learning_rate = float(self.scheduler.get_last_lr()[0])  # set from a float
        objective.begin_step(step)
        step_sums = _Sums()
        with _out_of_memory_as_error():
            for part, group in zip(parts, groups, strict=True):
                self.check_cancel_within_step()
                # Under autocast: reinforcement's collate samples answers with the model.
                with self.autocast():
                    micro = objective.collate(part, self.pad_id, self.device)
                    measured = objective.measure(self.model, micro, part)
                weight = 0.0 if group is None else 1.0
                self.scaler.scale(measured.loss * weight / n_units).backward()
                if group is not None:
                    step_sums.add(measured)
            if not self.sharded:  # FSDP reduced the gradients during backward
                self.ranks.sum_gradients(self.parameters)
            step_sums = step_sums.summed(self.ranks, self.device, objective.sum_names)
            self.scaler.unscale_(self.optimizer)
            clip = self.config.max_grad_norm or math.inf
            grad_norm = (
                clip_gradients(self.parameters, clip)
                if self.sharded
                else float(torch.nn.utils.clip_grad_norm_(self.parameters, clip))
            )
            loss_value = float(step_sums.loss) / n_units
            # Under fp16 loss scaling an infinite gradient is expected now and then: the
            # scaler skips that step and lowers the scale.
            _check_finite(loss_value, 0.0 if self.scaler.is_enabled() else grad_norm, step)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        release_freed_memory()  # the step's activations, freed but kept by the allocator
        n_tokens = sum(self.train_set.lengths[i] for i in batch)
        n_trained = sum(examples[i].n_trained for i in batch)
        accuracy = step_sums.correct / n_units
        token_accuracy = accuracy if objective.accuracy_name == "mean_token_accuracy" else None
        method_metrics = {} if token_accuracy is not None else {objective.accuracy_name: accuracy}
        method_metrics |= {
            name: total / (len(batch) if name in objective.per_example else n_units)
            for name, total in step_sums.sums.items()
        }
        self.step_seconds += time.perf_counter() - began
        self.tokens_seen += n_tokens
        self.steps_done += 1
        wall = time.perf_counter() - self.session_start
        memory = resident_memory()
        return StepRecord(
            step=step,
            total_steps=self.config.total_steps,
            epoch=epoch + 1,
            loss=loss_value,
            mean_token_accuracy=token_accuracy,
            learning_rate=learning_rate,
            grad_norm=grad_norm,
            tokens=n_tokens,
            trained_tokens=n_trained,
            tokens_per_second=self.tokens_seen / self.step_seconds,
            threads=threads,
            elapsed=start.elapsed + wall,
            eta_seconds=self.eta_seconds(step, wall),
            rss_mb=memory.now_mb,
            peak_rss_mb=memory.peak_mb,
            objective_metrics=method_metrics,
        )

    def eta_seconds(self, step: int, wall: float) -> float:
        """Remaining steps at this session's pace, plus the validation passes still due."""
        per_step = (wall - self.eval_seconds) / self.steps_done
        eval_rate = self.eval_tokens_per_second()
        if eval_rate is None:  # no pass yet: a forward pass costs about a third of a step
            eval_rate = self.tokens_seen / max(self.step_seconds, 1e-9) * 2
        remaining = (self.config.total_steps - step) * per_step
        return remaining + self.validation.tokens_from(step) / eval_rate

    def after_step(self, record: StepRecord, position: Position, end_of_epoch: bool) -> None:
        config, step = self.config, position.step
        if self.validation.due(step) and (scores := self.evaluate(self.validation.examples(step))):
            record = record.with_validation(*scores)
        if self.ranks.is_main:
            with (self.run_dir / METRICS_FILE).open("ab") as handle:
                handle.write(orjson.dumps(record.as_metrics()) + b"\n")
        every = config.checkpoint_every
        if end_of_epoch or (every and step % every == 0):
            self.checkpoint(position)
            record = replace(record, checkpoint=self.last_checkpoint)
        self.last_record = record
        if self.callback is not None:
            self.callback(record)

    def evaluate(
        self, indices: list[int]
    ) -> tuple[float, tuple[str, float], int, dict[str, float]] | None:
        """Validation loss, accuracy (named by the objective: over the trained tokens of
        `indices`, or its pairs), the number of examples and the objective's per-example
        metrics (supervised: answer_accuracy); None when cancelled part-way (the run then
        stops with its checkpoint)."""
        val_set = self.val_set
        assert val_set is not None  # validation is due only with a validation set
        size = math.ceil(self.config.batch_size / self.config.gradient_accumulation_steps)
        order = sorted(indices, key=val_set.lengths.__getitem__)
        every = [order[b : b + size] for b in range(0, len(order), size)]
        groups = even_share(every, self.ranks) if self.sharded else self.ranks.mine(every)
        objective = self.objective
        loss_sum, correct, n_units, n_tokens = 0.0, 0.0, 0, 0
        per_example = dict.fromkeys(objective.per_example, 0.0)
        began = time.perf_counter()
        self.model.eval()
        try:
            with evaluation_mode(self.model), _out_of_memory_as_error():
                for done, group in enumerate(groups, 1):
                    self.check_cancel_within_step()  # ranks sum their parts at the end
                    part = [val_set.examples[i] for i in group or every[0]]
                    with self.autocast():
                        batch = objective.collate(part, self.pad_id, self.device)
                        measured = objective.measure(self.model, batch, part)
                    if group is None:  # a sharded model's padding pass
                        continue
                    loss_sum += float(measured.loss)
                    correct += measured.correct
                    for name in per_example:
                        per_example[name] += measured.sums[name]
                    n_units += objective.units(part)
                    n_tokens += batch.n_tokens
                    if self.on_validation is not None:
                        self.on_validation(done, len(groups))
        except Interrupted:  # before a batch, or while reinforcement samples its answers
            return None
        finally:
            self.model.train()
            self.eval_seconds += time.perf_counter() - began
            self.eval_tokens += n_tokens
        totals = torch.tensor(
            [loss_sum, correct, n_units, *per_example.values()], dtype=torch.float64
        )
        loss_sum, correct, n_units, *counts = self.ranks.sum_(totals.to(self.device)).tolist()
        # Every example of `order` is scored once (padding passes count nothing).
        rates = {name: count / len(order) for name, count in zip(per_example, counts, strict=True)}
        accuracy = (objective.accuracy_name, correct / n_units)
        return loss_sum / n_units, accuracy, len(order), rates

    def checkpoint(self, position: Position) -> None:
        if not (self.ranks.is_main or self.sharded):
            return  # every rank holds the same weights: rank 0 saves them
        latest = latest_checkpoint(self.run_dir) if self.ranks.is_main else None
        saved = latest is not None and read_checkpoint_meta(latest)["step"] == position.step
        if self.sharded:  # rank 0 decides; every rank gathers the shards
            saved = self.ranks.any(saved, self.device)
        if saved:
            self.last_checkpoint = latest  # e.g. cancelled right after an epoch's checkpoint
            return
        full = gather_full_state(self.model, self.optimizer) if self.sharded else None
        if not self.ranks.is_main:
            return
        self.last_checkpoint = save_checkpoint(
            self.run_dir,
            self.model,
            self.optimizer,
            self.scheduler,
            position,
            self.config,
            self.run_info,
            scaler=self.scaler,
            full_state=full,
        )
        write_loss_curve(self.run_dir)

    def autocast(self) -> torch.autocast:
        half = _HALF.get(self.config.precision)
        return torch.autocast(self.device.type, dtype=half or torch.bfloat16, enabled=bool(half))

    def result(self, status: str, position: Position, start: Position, resumed: bool):
        record = self.last_record
        return TrainResult(
            status=status,
            output_dir=self.run_dir,
            step=position.step,
            total_steps=self.config.total_steps,
            train_loss=record.loss if record else None,
            val_loss=record.val_loss if record else None,
            val_mean_token_accuracy=record.val_mean_token_accuracy if record else None,
            val_answer_accuracy=record.objective_metrics.get("val_answer_accuracy")
            if record
            else None,
            tokens_per_second=record.tokens_per_second if record else None,
            elapsed_seconds=start.elapsed + time.perf_counter() - self.session_start,
            last_checkpoint=self.last_checkpoint or latest_checkpoint(self.run_dir),
            resumed_from_step=start.step if resumed else None,
            dataset=self.run_info["dataset"],
        )


@dataclass
class _Sums:
    """A step's loss, right answers and metric sums over its micro-batches (and ranks)."""

    loss: float | torch.Tensor = 0.0
    correct: float = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, measured: Measured) -> None:
        self.loss = self.loss + measured.loss.detach()  # summed on the device: one sync
        self.correct += measured.correct
        for name, value in measured.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value

    def summed(self, ranks: Ranks, device: torch.device, names: Sequence[str]) -> _Sums:
        """The totals over every rank (a collective; a no-op in one process), of the loss,
        the right answers and the objective's `names`, in that order on every rank (one
        whose step was all padding passes contributes zeros)."""
        local = torch.stack(
            [
                torch.as_tensor(self.loss, device=device).float(),
                *(
                    torch.tensor(float(v), device=device)
                    for v in (self.correct, *(self.sums.get(n, 0.0) for n in names))
                ),
            ]
        )
        totals = ranks.sum_(local).tolist()
        return _Sums(totals[0], totals[1], dict(zip(names, totals[2:], strict=True)))


def _prepare_output(
    output_dir: Path, resume: bool, force: bool, ranks: Ranks, model: torch.nn.Module
) -> Path | None:
    """Rank 0 prepares the output directory; every rank then finds the same checkpoint."""
    checkpoint = None
    if ranks.is_main:
        # The directory the model was loaded from is an input: never the output (`--force`
        # would delete it).
        source = getattr(model, "name_or_path", None)
        checkpoint = prepare_output_dir(
            output_dir, resume=resume, force=force, inputs=(Path(source),) if source else ()
        )
    ranks.barrier()
    if not ranks.is_main and resume:
        checkpoint = latest_checkpoint(output_dir)
    return checkpoint


def _on_device(model: Model, device: torch.device) -> Model:
    """The model on `device`; a 4-bit model stays where bitsandbytes placed it."""
    if getattr(model, "is_loaded_in_4bit", False):
        return model
    return model.to(device)


def _check_finite(loss: float, grad_norm: float, step: int) -> None:
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    what = f"loss became {loss}" if not math.isfinite(loss) else f"gradient norm became {grad_norm}"
    raise TunelabError(
        "non_finite_loss",
        f"training stopped at step {step}: the {what}.",
        hint="train again with a lower learning rate (--learning-rate-multiplier 0.5 or less, "
        "or --learning-rate)",
    )


@contextlib.contextmanager
def _out_of_memory_as_error() -> Iterator[None]:
    """Turn the device running out of memory into an error that says what to reduce."""
    try:
        yield
    except RuntimeError as error:  # torch.OutOfMemoryError is one
        message = str(error)
        if not isinstance(error, _OUT_OF_MEMORY) and not (
            "out of memory" in message or "can't allocate memory" in message
        ):
            raise
        raise TunelabError(
            "out_of_memory",
            "training ran out of memory.",
            hint="reduce --batch-size or --max-seq-len, raise --gradient-accumulation-steps, "
            "turn on --gradient-checkpointing true, or use --method lora (on a GPU also "
            "--load-in-4bit true)",
        ) from None


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16's narrow range underflows small gradients without loss scaling; bf16 and fp32 do
    not (their scaler is disabled: a no-op)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def _optimizer(model: torch.nn.Module, config: ResolvedConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (decaying norms and biases only hurts)."""
    parameters = trainable_parameters(model)
    groups = [
        {"params": [p for p in parameters if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    try:
        return torch.optim.AdamW(groups, lr=config.learning_rate, fused=True)
    except (RuntimeError, TypeError):  # fused kernels need a recent torch on this device
        return torch.optim.AdamW(groups, lr=config.learning_rate, foreach=True)


def _schedule(config: ResolvedConfig) -> Callable[[int], float]:
    """Learning-rate factor for the step after `done` steps: warm-up, then the schedule."""
    warmup, total, kind = config.warmup_steps, config.total_steps, config.lr_scheduler

    def factor(done: int) -> float:
        if done < warmup:
            # (done + 1): the first step already learns, unlike a warm-up starting at 0.
            return (done + 1) / (warmup + 1)
        progress = (done - warmup) / max(1, total - warmup)
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - progress if kind == "linear" else 1.0

    return factor


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
