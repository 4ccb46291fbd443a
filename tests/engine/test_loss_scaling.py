"""fp16 loss scaling survives a checkpoint: a resumed run scales (and skips) as the
uninterrupted one does. Tested on the CPU, where torch's GradScaler and fp16 autocast run too;
no GPU figures are claimed here."""

from __future__ import annotations

import pytest
import torch

from tiny import Crash, crash_at_step
from tunelab.engine import config as engine_config
from tunelab.engine import train, trainer
from tunelab.engine.checkpoint import (
    Position,
    complete_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from tunelab.engine.trainer import grad_scaler

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")


def overflowed_scaler(model, optimizer) -> torch.amp.GradScaler:
    """An enabled scaler after one step whose gradients overflowed (scale halved)."""
    scaler = grad_scaler("fp16", torch.device("cpu"))
    loss = sum(p.sum() for p in model.parameters())
    scaler.scale(loss).backward()
    next(model.parameters()).grad.fill_(float("inf"))
    scaler.step(optimizer)  # skipped: an inf gradient
    scaler.update()
    return scaler


def test_the_loss_scale_is_saved_in_the_checkpoint_and_restored(tmp_path, make_model, fast_config):
    from tunelab.engine.config import ResolvedConfig

    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = overflowed_scaler(model, optimizer)
    assert scaler.get_scale() == 2.0**15  # 65536 halved
    config = ResolvedConfig.from_dict({**vars(fast_config()), "precision": "fp16"})
    path = save_checkpoint(
        tmp_path, model, optimizer, scheduler, Position(3, 0, 3), config, {}, scaler=scaler
    )

    fresh = grad_scaler("fp16", torch.device("cpu"))
    load_checkpoint(path, make_model(), optimizer, scheduler, fresh)

    assert fresh.state_dict() == scaler.state_dict()
    assert fresh.get_scale() == 2.0**15


def test_a_checkpoint_without_a_scaler_state_leaves_the_initial_scale(
    tmp_path, make_model, fast_config
):
    from tunelab.engine.config import ResolvedConfig

    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    config = ResolvedConfig.from_dict(vars(fast_config()))
    path = save_checkpoint(tmp_path, model, optimizer, scheduler, Position(1, 0, 1), config, {})
    state = torch.load(path / "training_state.pt", weights_only=True)
    assert state["grad_scaler"] == {}  # an fp32 run (or one saved before scalers were kept)

    fresh = grad_scaler("fp16", torch.device("cpu"))
    load_checkpoint(path, make_model(), optimizer, scheduler, fresh)
    assert fresh.get_scale() == 2.0**16


HIGH_SCALE = 2.0**24


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """tunelab refuses fp16 on the CPU (emulated, slow): let it through to exercise scaling,
    with an initial scale high enough that the tiny model's gradients overflow fp16 at first
    (as a large model's do at the default scale), so the scale has moved by the checkpoint."""
    monkeypatch.setattr(
        engine_config, "choose_precision", lambda requested, device, caps: requested
    )
    monkeypatch.setattr(
        trainer,
        "grad_scaler",
        lambda precision, device: torch.amp.GradScaler(
            device.type, init_scale=HIGH_SCALE, enabled=precision == "fp16"
        ),
    )


def test_an_fp16_run_resumed_from_a_checkpoint_matches_the_uninterrupted_run(
    tmp_path, tokenizer, make_model, examples, fast_config, fp16_on_cpu
):
    config = fast_config(precision="fp16", n_epochs=3, checkpoint_every=2)
    straight, straight_model = [], make_model()
    train(
        straight_model,
        tokenizer,
        examples,
        None,
        config,
        tmp_path / "straight",
        callback=straight.append,
    )

    crashed = tmp_path / "crashed"
    with pytest.raises(Crash):
        train(make_model(), tokenizer, examples, None, config, crashed, callback=crash_at_step(5))
    state = torch.load(complete_checkpoints(crashed)[-1] / "training_state.pt", weights_only=True)
    assert state["grad_scaler"]["scale"] < HIGH_SCALE  # overflows lowered it before step 4

    resumed, resumed_model = [], make_model()
    train(
        resumed_model,
        tokenizer,
        examples,
        None,
        config,
        crashed,
        resume=True,
        callback=resumed.append,
    )

    assert [u.step for u in resumed] == list(range(5, straight[-1].step + 1))
    for after, before in zip(resumed, straight[4:], strict=True):
        assert after.loss == pytest.approx(before.loss, abs=1e-6)
    for a, b in zip(resumed_model.parameters(), straight_model.parameters(), strict=True):
        assert torch.equal(a, b)
