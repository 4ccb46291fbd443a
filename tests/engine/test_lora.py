from __future__ import annotations

import pytest
import torch

from tunelab.engine import TrainConfig
from tunelab.engine.lora import FastDropout, prepare_model
from tunelab.errors import TunelabError


def adapted_modules(model) -> set[str]:
    return {
        n.split(".lora_A")[0].split(".")[-1] for n, _ in model.named_parameters() if "lora_A" in n
    }


def test_default_targets_are_every_linear_layer_of_the_blocks(make_model):
    model = prepare_model(make_model(), TrainConfig(precision="fp32").resolve(10, 256))
    assert adapted_modules(model) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_chosen_target_modules_and_unknown_ones(make_model):
    config = TrainConfig(lora_target_modules=("q_proj", "v_proj"), precision="fp32")
    model = prepare_model(make_model(), config.resolve(10, 256))
    assert adapted_modules(model) == {"q_proj", "v_proj"}

    with pytest.raises(TunelabError) as caught:
        prepare_model(make_model(), TrainConfig(lora_target_modules=("wq",)).resolve(10, 256))
    assert caught.value.code == "invalid_config"
    assert "--lora-target-modules" in caught.value.message


def test_bf16_lora_keeps_trained_weights_in_fp32(make_model):
    model = prepare_model(make_model(), TrainConfig(precision="bf16").resolve(10, 256))
    dtypes = {p.requires_grad: p.dtype for p in model.parameters()}
    assert dtypes == {True: torch.float32, False: torch.bfloat16}


def test_fast_dropout_drops_the_right_fraction_and_keeps_the_mean():
    dropout = FastDropout(0.05).train()
    torch.manual_seed(0)
    out = dropout(torch.ones(1_000_003))
    assert abs(float((out == 0).float().mean()) - 0.05) < 0.002
    assert abs(float(out.mean()) - 1.0) < 0.005
    torch.manual_seed(0)
    assert torch.equal(dropout(torch.ones(1_000_003)), out)  # driven by torch's seeded RNG
    x = torch.randn(4, 7)
    assert dropout.eval()(x) is x
