"""The run directory: checkpoints, metrics and the final output.

`--output DIR` holds `metrics.jsonl`, `checkpoints/` and, once training has finished, the
trained weights, the tokenizer and `tunelab_config.json`, written last: without it the
directory is an unfinished run (resumable with `--resume`), never a model that looks complete.

Checkpoints hold everything needed to continue a run exactly where it stopped.

A checkpoint is a directory `checkpoints/step-00000042/` holding the trained weights (adapter
or full model, loadable as they are), `training_state.pt` (optimizer, scheduler, fp16 loss
scaler, torch RNG states) and `checkpoint.json` (step, data position, Python and NumPy RNG
states, the resolved config, metadata). It is written into a hidden temporary directory, the
`COMPLETE` marker is written last, and the directory is renamed into place: a run killed at
any moment leaves either a complete checkpoint or a temporary directory that is ignored and
cleaned up.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
import torch
from safetensors.torch import load_file

from tunelab.curves import METRICS_FILE
from tunelab.engine.config import ResolvedConfig
from tunelab.engine.lora import ADAPTER_WEIGHTS, FULL_WEIGHTS, load_weights, save_weights
from tunelab.engine.sharding import NAMED_OPTIMIZER_LAYOUT, FullState, is_sharded, load_full_state
from tunelab.engine.sources import META_FILE, OUTPUT_MARKER
from tunelab.errors import TunelabError, usage_error
from tunelab.io import atomic_write_text

if TYPE_CHECKING:
    from tunelab.engine.models import CausalLM

CHECKPOINTS_DIR = "checkpoints"
MARKER = "COMPLETE"
STATE_FILE = "training_state.pt"
_PREFIX = "step-"
_TEMP_PREFIX = ".tmp-"
# Files a previous run may have left in an output directory; --force removes them first.
_RUN_FILES = (
    OUTPUT_MARKER,
    METRICS_FILE,
    ADAPTER_WEIGHTS,
    "adapter_config.json",
    FULL_WEIGHTS,
)
# Settings that may change between an interrupted run and its resumption: they do not
# change what is trained (only how often it is logged and saved, its memory use or speed).
_RESUMABLE_CHANGES = {
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "gradient_checkpointing",
    "use_liger_kernel",
}
# Settings added after checkpoints were first written: what a checkpoint without them used.
_EARLIER_DEFAULTS = {
    "distributed": "ddp",
    "training_method": "supervised",
    "dpo_beta": 0.1,
    "rl_group_size": 4,
    "rl_max_answer_tokens": 512,
    "rl_temperature": 1.0,
    "rl_kl_beta": 0.04,
    "rl_clip_epsilon": 0.2,
}


@dataclass(frozen=True)
class Position:
    """Where training stands after `step` optimizer steps."""

    step: int
    epoch: int  # 0-based epoch of the next step
    step_in_epoch: int  # steps of that epoch already done
    # Seconds of training so far, so that a resumed run's elapsed time and ETA continue.
    elapsed: float = 0.0


def save_checkpoint(
    run_dir: Path,
    model: CausalLM,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    position: Position,
    config: ResolvedConfig,
    metadata: dict,
    *,
    scaler: torch.amp.GradScaler | None = None,
    full_state: FullState | None = None,
) -> Path:
    """Write a complete checkpoint for `position`, then keep only the latest few.

    `full_state`: a sharded model's weights and optimizer state, gathered (engine.sharding);
    the optimizer state is then keyed by parameter name."""
    root = run_dir / CHECKPOINTS_DIR
    final = root / f"{_PREFIX}{position.step:08d}"
    staging = root / f"{_TEMP_PREFIX}{final.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_weights(model, staging, full_state.model if full_state else None)
    torch.save(
        {
            "optimizer": full_state.optimizer if full_state else optimizer.state_dict(),
            "optimizer_layout": NAMED_OPTIMIZER_LAYOUT if full_state else "numbered",
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # fp16 loss scaling: its current scale and the steps since it last changed ({}
            # when disabled). A resumed run restarting at the initial scale would skip steps
            # (overflows) the uninterrupted run did not.
            "grad_scaler": scaler.state_dict() if scaler is not None else {},
        },
        staging / STATE_FILE,
    )
    meta = {
        "step": position.step,
        "epoch": position.epoch,
        "step_in_epoch": position.step_in_epoch,
        "elapsed": position.elapsed,
        # The batch order of an epoch is a function of (seed, epoch): see epoch_batches.
        "data_order_seed": [config.seed, position.epoch],
        "python_rng": random.getstate(),
        "numpy_rng": _numpy_state(),
        "config": config.to_dict(),
        "metadata": metadata,
        "created_at": now_iso(),
    }
    (staging / META_FILE).write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    (staging / MARKER).write_text(final.name + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    prune_checkpoints(run_dir, config.keep_checkpoints)
    return final


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / MARKER).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the `keep` latest complete checkpoints, and abandoned partial ones."""
    root = run_dir / CHECKPOINTS_DIR
    complete = complete_checkpoints(run_dir)
    for old in complete[: max(0, len(complete) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    for entry in root.iterdir():
        partial = entry.name.startswith(_PREFIX) and not (entry / MARKER).is_file()
        if entry.is_dir() and (entry.name.startswith(_TEMP_PREFIX) or partial):
            shutil.rmtree(entry, ignore_errors=True)


def read_checkpoint_meta(path: Path) -> dict:
    try:
        return orjson.loads((path / META_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError) as err:
        raise TunelabError(
            "checkpoint_unreadable",
            f"checkpoint {path} cannot be read: {err}",
            hint="delete that checkpoint directory to resume from the one before it",
        ) from None


def load_checkpoint(
    path: Path,
    model: CausalLM,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None = None,
) -> Position:
    """Restore weights, optimizer, scheduler, loss-scaler and RNG states; returns the data
    position."""
    meta = read_checkpoint_meta(path)
    # Memory-mapped: a sharded run's ranks other than 0 read only the RNG states.
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True, mmap=True)
    named = state.get("optimizer_layout") == NAMED_OPTIMIZER_LAYOUT
    if is_sharded(model) != named:
        raise TunelabError(
            "checkpoint_mismatch",
            f"checkpoint {path} was written by a {'sharded' if named else 'unsharded'} run.",
            hint="resume with the --nproc-per-node and --distributed it was started with",
        )
    if named:
        _load_sharded(path, model, optimizer, state["optimizer"])
    else:
        load_weights(model, path)
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    # Checkpoints from before the scaler was saved, and fp32/bf16 runs, have none.
    if scaler is not None and scaler.is_enabled() and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    _set_numpy_state(meta["numpy_rng"])
    return Position(meta["step"], meta["epoch"], meta["step_in_epoch"], meta["elapsed"])


def _load_sharded(path: Path, model, optimizer, optimizer_state: dict) -> None:
    """Rank 0 reads the full weights and optimizer state; every rank receives its shards."""
    if torch.distributed.get_rank() == 0:
        weights = load_file(path / FULL_WEIGHTS)
    else:
        weights, optimizer_state = {}, {}
    load_full_state(model, optimizer, weights, optimizer_state)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _numpy_state() -> list:
    state = np.random.get_state()
    # The global generator is MT19937, whose legacy state is a tuple (a dict is for others).
    assert isinstance(state, tuple)
    name, keys, pos, has_gauss, cached = state
    return [name, keys.tolist(), pos, has_gauss, cached]


def _set_numpy_state(state: list) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def prepare_output_dir(
    output_dir: Path, *, resume: bool, force: bool, inputs: Iterable[Path | None] = ()
) -> Path | None:
    """Check the output directory; returns the checkpoint to resume from, if any."""
    check_output_dir(output_dir, resume=resume, force=force, inputs=inputs)
    if force:
        for name in _RUN_FILES:  # the completeness marker first
            (output_dir / name).unlink(missing_ok=True)
        shutil.rmtree(output_dir / CHECKPOINTS_DIR, ignore_errors=True)
    checkpoint = latest_checkpoint(output_dir) if output_dir.is_dir() else None
    output_dir.mkdir(parents=True, exist_ok=True)
    return checkpoint if resume else None


def check_output_dir(
    output_dir: Path,
    *,
    resume: bool,
    force: bool,
    need_checkpoint: bool = False,
    inputs: Iterable[Path | None] = (),
) -> None:
    """Refuse an output directory that training would overwrite, before any work starts.

    `need_checkpoint`: `--resume` must find a run to resume (the CLI's rule; the worker
    resumes when it can and starts afresh otherwise). `inputs`: the directories training
    reads (the model it starts from); the output may be neither one of them nor above one.
    """
    if resume and force:
        raise usage_error("invalid_config", "Can't provide both --resume and --force. Choose one.")
    check_not_input(output_dir, inputs)
    if output_dir.exists() and not output_dir.is_dir():
        raise TunelabError("output_is_file", f"--output {output_dir} is a file, not a directory.")
    if (output_dir / OUTPUT_MARKER).exists() and not force:
        raise TunelabError(
            "output_exists",
            f"{output_dir} already holds a finished training run.",
            hint="choose another --output, or pass --force to train over it",
        )
    checkpoint = latest_checkpoint(output_dir) if output_dir.is_dir() and not force else None
    if resume and need_checkpoint and checkpoint is None:
        raise usage_error(
            "nothing_to_resume",
            f"--resume: {output_dir} holds no checkpoint to continue from.",
            hint="drop --resume to start a new run there",
        )
    if not (resume or force) and output_dir.is_dir() and any(output_dir.iterdir()):
        unfinished = " and holds an unfinished run" if checkpoint else ""
        raise TunelabError(
            "output_exists",
            f"{output_dir} is not empty{unfinished}.",
            hint="pass --resume to continue it, --force to start over, or choose another --output",
        )


def check_not_input(output_dir: Path, inputs: Iterable[Path | None]) -> None:
    """Refuse an output that is, or holds, a directory the run reads from (`output_is_input`):
    starting over there (`--force`) would delete the model training starts from."""
    target = Path(output_dir).resolve()
    for source in inputs:
        if source is None or not Path(source).exists():
            continue
        source = Path(source).resolve()
        if source == target or target in source.parents:
            raise usage_error(
                "output_is_input",
                f"--output {output_dir} would overwrite {source}, the model training starts from.",
                hint="train into a new --output directory",
            )


def check_resumable(checkpoint: Path, config: ResolvedConfig, fingerprint: str) -> None:
    """A run resumes only with the settings and data it was started with."""
    meta = read_checkpoint_meta(checkpoint)
    before, now = {**_EARLIER_DEFAULTS, **meta["config"]}, config.to_dict()
    changed = [
        f"--{name.replace('_', '-')} was {before.get(name)!r}, now {value!r}"
        for name, value in now.items()
        if name not in _RESUMABLE_CHANGES and before.get(name) != value
    ]
    if meta["metadata"].get("data_fingerprint") != fingerprint:
        changed.append("the training data differs")
    if changed:
        raise TunelabError(
            "resume_mismatch",
            f"cannot resume from {checkpoint}: " + "; ".join(changed) + ".",
            hint="resume with the same data and settings, or pass --force to start over",
        )


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines after `step`: a resumed run logs those steps again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_bytes().splitlines():
        try:
            if orjson.loads(line)["step"] <= step:
                kept.append(line.decode())
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by a crash
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def write_output(
    model: CausalLM,
    tokenizer,
    output_dir: Path,
    config: ResolvedConfig,
    run_info: dict,
    result: dict,
    weights: dict | None = None,
) -> None:
    """The finished run (rank 0); `weights`: a sharded model's, gathered."""
    save_weights(model, output_dir, weights)
    tokenizer.save_pretrained(output_dir)
    summary = {
        "base_model": run_info["base_model"],
        "method": config.method,
        "config": config.to_dict(),
        "dataset": run_info["dataset"],
        "data_fingerprint": run_info["data_fingerprint"],
        "metadata": run_info["metadata"],
        "result": {k: v for k, v in result.items() if k != "dataset"},
        "created_at": now_iso(),
    }
    atomic_write_text(output_dir / OUTPUT_MARKER, json.dumps(summary, indent=2) + "\n")
