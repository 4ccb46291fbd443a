"""The step record: what the trainer reports, and the metrics it writes of it."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tunelab.engine.memory import release_freed_memory, resident_memory
from tunelab.engine.steps import StepRecord


def a_step(**changes) -> StepRecord:
    record = StepRecord(
        step=3,
        total_steps=10,
        epoch=1,
        loss=1.5,
        mean_token_accuracy=0.4,
        learning_rate=1e-4,
        grad_norm=0.8,
        tokens=120,
        trained_tokens=40,
        tokens_per_second=900.0,
        threads=2,
        elapsed=4.5,
        eta_seconds=12.0,
    )
    return dataclasses.replace(record, **changes)


def test_metrics_leave_out_the_run_length_the_checkpoint_and_validation_not_done():
    metrics = a_step(checkpoint=Path("/run/checkpoints/step-00000003")).as_metrics()
    assert metrics["step"] == 3 and metrics["loss"] == 1.5 and metrics["threads"] == 2
    assert not {"total_steps", "checkpoint", "val_loss", "val_examples"} & set(metrics)


def test_a_validated_step_has_its_validation_figures_in_the_metrics():
    record = a_step().with_validation(1.25, ("mean_token_accuracy", 0.5), 8)
    assert record.validated and not a_step().validated
    metrics = record.as_metrics()
    assert (metrics["val_loss"], metrics["val_mean_token_accuracy"], metrics["val_examples"]) == (
        1.25,
        0.5,
        8,
    )


def test_a_step_record_cannot_change():
    with pytest.raises(dataclasses.FrozenInstanceError):
        a_step().loss = 0.0  # type: ignore[misc]


def test_a_preference_runs_figures_are_metrics_of_their_own():
    record = replace(
        a_step(),
        mean_token_accuracy=None,
        objective_metrics={"preference_accuracy": 0.75, "reward_margin": 0.2},
    ).with_validation(0.6, ("preference_accuracy", 0.5), 4)
    metrics = record.as_metrics()
    assert "mean_token_accuracy" not in metrics and "val_mean_token_accuracy" not in metrics
    assert metrics["preference_accuracy"] == 0.75 and metrics["reward_margin"] == 0.2
    assert (metrics["val_loss"], metrics["val_preference_accuracy"]) == (0.6, 0.5)


def test_memory_figures_are_metrics_where_the_platform_can_read_them():
    metrics = a_step(rss_mb=812.5, peak_rss_mb=1024.0).as_metrics()
    assert (metrics["rss_mb"], metrics["peak_rss_mb"]) == (812.5, 1024.0)
    assert not {"rss_mb", "peak_rss_mb"} & set(a_step().as_metrics())


def test_resident_memory_reads_the_process_now_and_at_its_peak():
    before = resident_memory()
    block = bytearray(64 * 1024 * 1024)  # 64 MB, touched: resident
    block[::4096] = b"x" * len(block[::4096])
    after = resident_memory()
    assert after.now_mb is not None and after.peak_mb is not None
    # The two are counted apart by the kernel (a few pages apart at times).
    assert after.now_mb >= before.now_mb + 60 and after.peak_mb >= before.now_mb + 60


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_freed_inside_the_heap_is_handed_back():
    """Blocks below glibc's mmap threshold live in its heap; freed under a block still in use,
    they stay resident until released."""
    blocks = [bytes(100_000) + bytes([i % 256]) for i in range(600)]  # 60 MB, each touched
    last = blocks.pop()
    del blocks
    held = resident_memory().now_mb
    release_freed_memory()
    assert resident_memory().now_mb < held - 40
    assert last[-1] == 599 % 256
