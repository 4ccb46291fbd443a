"""Device, precision and GPU-feature choices, tested on a CPU by injecting capabilities."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.engine import train
from tunelab.engine.config import TrainConfig
from tunelab.engine.device import (
    Capabilities,
    check_optional_features,
    choose_device,
    choose_precision,
    use_gradient_checkpointing,
)
from tunelab.errors import TunelabError

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

H100 = Capabilities(cuda=True, cuda_capability=(9, 0), cuda_name="NVIDIA H100")
T4 = Capabilities(cuda=True, cuda_capability=(7, 5), cuda_name="Tesla T4")
CPU = Capabilities(cuda=False)
CPU_AMX = Capabilities(cuda=False, cpu_bf16=True)
WITH_PACKAGES = frozenset({"bitsandbytes", "liger_kernel"})


def test_cuda_is_chosen_when_present_and_refused_when_absent():
    assert choose_device(None, H100) == "cuda" and choose_device("auto", T4) == "cuda"
    assert choose_device(None, CPU) == "cpu" and choose_device("cpu", H100) == "cpu"
    with pytest.raises(TunelabError) as caught:
        choose_device("cuda", CPU)
    assert caught.value.code == "cuda_unavailable"


@pytest.mark.parametrize(
    ("caps", "device", "expected"),
    [(H100, "cuda", "bf16"), (T4, "cuda", "fp16"), (CPU, "cpu", "fp32"), (CPU_AMX, "cpu", "bf16")],
)
def test_auto_precision_is_what_the_device_computes_natively(caps, device, expected):
    assert choose_precision("auto", device, caps) == expected
    assert choose_precision("fp32", device, caps) == "fp32"


def test_fp16_is_refused_on_the_cpu():
    assert choose_precision("fp16", "cuda", T4) == "fp16"
    with pytest.raises(TunelabError) as caught:
        choose_precision("fp16", "cpu", CPU_AMX)
    assert caught.value.code == "fp16_needs_cuda"


def test_gradient_checkpointing_auto_turns_on_for_large_models():
    assert use_gradient_checkpointing("auto", 1_500_000_000)
    assert not use_gradient_checkpointing("auto", 135_000_000)
    assert use_gradient_checkpointing(True, 10) and not use_gradient_checkpointing(False, 10**10)


@pytest.mark.parametrize("flag", ["load_in_4bit", "liger"])
def test_qlora_and_liger_say_what_is_missing(flag):
    asked = {"load_in_4bit": flag == "load_in_4bit", "liger": flag == "liger"}
    with pytest.raises(TunelabError) as missing:
        check_optional_features(**asked, device="cuda", caps=H100)
    assert missing.value.code == "optional_package_missing"
    assert "pip install" in missing.value.hint
    with pytest.raises(TunelabError) as no_gpu:
        check_optional_features(
            **asked, device="cpu", caps=Capabilities(False, packages=WITH_PACKAGES)
        )
    assert no_gpu.value.code == "feature_needs_cuda"
    with_gpu = Capabilities(True, (8, 0), packages=WITH_PACKAGES)
    check_optional_features(**asked, device="cuda", caps=with_gpu)  # no error


def test_train_refuses_qlora_here_before_touching_the_data(tmp_path, tokenizer, make_model):
    config = TrainConfig(load_in_4bit=True)
    with pytest.raises(TunelabError) as caught:
        train(make_model(), tokenizer, [], None, config, tmp_path / "run", device="cpu")
    assert caught.value.code in ("optional_package_missing", "feature_needs_cuda")
    assert not (tmp_path / "run").exists()


def test_qlora_needs_lora():
    with pytest.raises(TunelabError) as caught:
        TrainConfig(method="full", load_in_4bit=True).validate()
    assert "--load-in-4bit needs --method lora" in caught.value.message


def test_gradient_checkpointing_gives_the_same_training(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    losses = {}
    for checkpointing in (False, True):
        model = make_model()
        config = fast_config(gradient_checkpointing=checkpointing, lora_dropout=0.0)
        train(model, tokenizer, examples, None, config, tmp_path / str(checkpointing))
        assert model.is_gradient_checkpointing == checkpointing
        lines = (tmp_path / str(checkpointing) / "metrics.jsonl").read_text().splitlines()
        losses[checkpointing] = [json.loads(line)["loss"] for line in lines]
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_detect_reads_this_machine():
    caps = Capabilities.detect()
    assert caps.cuda == torch.cuda.is_available()
    assert choose_device(None, caps) == ("cuda" if caps.cuda else "cpu")


def test_a_cpu_with_avx512_bf16_but_no_amx_trains_in_bf16_only_where_it_times_faster(
    monkeypatch,
):
    """Without AMX, bf16 matmuls ran at 0.55x fp32 on a Xeon and 1.8x on an AMD EPYC, both
    with AVX512-BF16: `auto` picks bf16 by timing them, and never without bf16 instructions."""
    import torch

    from tunelab.engine import device

    flags = {"avx512_bf16": True, "amx_bf16": False}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags, raising=False)
    monkeypatch.setattr(device, "bf16_matmul_speedup", lambda: 0.55)
    assert choose_precision("auto", "cpu", Capabilities.detect()) == "fp32"
    monkeypatch.setattr(device, "bf16_matmul_speedup", lambda: 1.8)
    assert choose_precision("auto", "cpu", Capabilities.detect()) == "bf16"
    flags["avx512_bf16"] = False
    assert choose_precision("auto", "cpu", Capabilities.detect()) == "fp32"
    flags["amx_bf16"] = True
    monkeypatch.setattr(device, "bf16_matmul_speedup", lambda: 0.1)  # AMX is not timed
    assert choose_precision("auto", "cpu", Capabilities.detect()) == "bf16"


def test_the_bf16_timing_measures_this_cpu():
    from tunelab.engine.device import bf16_matmul_speedup

    assert 0.01 < bf16_matmul_speedup() < 100
