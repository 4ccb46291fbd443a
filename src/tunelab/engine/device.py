"""Which device and precision a run uses, and whether the optional GPU features are there.

Decisions are pure functions of a `Capabilities` record, so that they are tested on a CPU by
injecting the capabilities of GPUs that are not present; `Capabilities.detect()` reads the
real machine.

- device: CUDA when present (`cuda` asked for without one is an error), else the CPU;
- precision `auto`: on CUDA, bf16 autocast where the GPU computes it natively (compute
  capability 8.0 and later: A100, H100, L4, RTX 30xx+), else fp16 autocast with loss scaling
  (V100, T4); on the CPU, bf16 where it multiplies bf16 faster than fp32, else fp32. With AMX
  (Sapphire Rapids and later) it does, about 1.8x. With AVX512-BF16 alone it depends on the
  chip, so it is timed once per process (`bf16_matmul_speedup`, about 0.1 s): on a 2-core
  Xeon with AVX512-BF16 and no AMX a bf16 matmul ran at 0.17 TFLOP/s against 0.31 in fp32
  and a LoRA step took 1.8x as long under bf16 autocast (2026-12-01); on a 2-core AMD EPYC
  with AVX512-BF16, 0.22 against 0.12 TFLOP/s, and a LoRA step took 0.7x as long (2026-12-02).
  Without either, bf16 is emulated and slow;
- gradient checkpointing `auto`: on for models of 1B parameters or more, where activations,
  not weights, fill a GPU's memory;
- QLoRA (`load_in_4bit`) and Liger kernels need CUDA and their packages; asking for them
  without either is an error that says what is missing.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunelab.errors import usage_error

AUTO = "auto"
# Below this, recomputing activations costs more time than the memory it saves is worth.
CHECKPOINTING_MIN_PARAMETERS = 1_000_000_000
BF16_MIN_CAPABILITY = (8, 0)
# A matmul shape of a small model's training step (tokens x hidden by hidden x MLP width).
BF16_TIMING_SHAPE = (1024, 576, 1536)
# autocast adds casts and keeps elementwise work in fp32: a step gains less than its matmuls
# (matmuls 1.8x faster gave steps 1.45x faster), so bf16 must multiply clearly faster.
BF16_MIN_SPEEDUP = 1.3


@dataclass(frozen=True)
class Capabilities:
    cuda: bool
    cuda_capability: tuple[int, int] | None = None
    cuda_name: str = ""
    cpu_bf16: bool = False  # the CPU multiplies bf16 faster than fp32 (see the docstring)
    packages: frozenset[str] = frozenset()

    @classmethod
    def detect(cls) -> Capabilities:
        import torch  # here, not at the top: the CLI reads TrainConfig without loading torch

        cuda = torch.cuda.is_available()
        cpu = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        packages = {
            name for name in ("bitsandbytes", "liger_kernel") if importlib.util.find_spec(name)
        }
        return cls(
            cuda=cuda,
            cuda_capability=torch.cuda.get_device_capability() if cuda else None,
            cuda_name=torch.cuda.get_device_name() if cuda else "",
            cpu_bf16=cpu_multiplies_bf16_faster(cpu),
            packages=frozenset(packages),
        )


def cpu_multiplies_bf16_faster(flags: Mapping[str, Any]) -> bool:
    """From torch.cpu.get_capabilities(): AMX, or AVX512-BF16 that times faster than fp32."""
    if flags.get("amx_bf16"):
        return True
    return bool(flags.get("avx512_bf16")) and bf16_matmul_speedup() >= BF16_MIN_SPEEDUP


@functools.cache
def bf16_matmul_speedup() -> float:
    """How many times faster this CPU multiplies in bf16 than in fp32 (best of 5 each)."""
    # torch: loaded where it is used, so engine.config and light commands stay light
    import torch

    m, k, n = BF16_TIMING_SHAPE
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        a @ b  # the first call sets up the kernel
        best[dtype] = math.inf
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def choose_device(requested: str | None, caps: Capabilities) -> str:
    """`cuda` when present (or asked for), else `cpu`."""
    if requested is None or requested == AUTO:
        return "cuda" if caps.cuda else "cpu"
    if requested.startswith("cuda") and not caps.cuda:
        raise usage_error(
            "cuda_unavailable",
            "a CUDA GPU was asked for, but torch sees none.",
            hint="install a CUDA build of torch on a machine with an NVIDIA GPU, or train on "
            "the CPU",
        )
    return requested


def choose_precision(requested: str, device: str, caps: Capabilities) -> str:
    """`bf16`, `fp16` or `fp32`: `auto` is the fastest the device computes natively."""
    on_cuda = device.startswith("cuda")
    if requested == "fp16" and not on_cuda:
        raise usage_error(
            "fp16_needs_cuda",
            "--precision fp16 needs a CUDA GPU (on the CPU it is emulated and slow).",
            hint="use --precision auto, bf16 or fp32",
        )
    if requested != AUTO:
        return requested
    if on_cuda:
        native = (caps.cuda_capability or (0, 0)) >= BF16_MIN_CAPABILITY
        return "bf16" if native else "fp16"
    return "bf16" if caps.cpu_bf16 else "fp32"


def use_gradient_checkpointing(requested: bool | str, n_parameters: int) -> bool:
    if requested == AUTO:
        return n_parameters >= CHECKPOINTING_MIN_PARAMETERS
    return bool(requested)


def check_optional_features(
    *, load_in_4bit: bool, liger: bool, device: str, caps: Capabilities
) -> None:
    """Raise a clear error for QLoRA or Liger asked for where they cannot run."""
    wanted = [
        ("--load-in-4bit (QLoRA)", "bitsandbytes", "bitsandbytes", load_in_4bit),
        ("--use-liger-kernel", "liger_kernel", "liger-kernel", liger),
    ]
    for flag, module, package, asked in wanted:
        if not asked:
            continue
        if module not in caps.packages:
            raise usage_error(
                "optional_package_missing",
                f"{flag} needs the {package} package, which is not installed.",
                hint=f"pip install 'tunelab[gpu]' (or pip install {package}) on a CUDA machine",
            )
        if not device.startswith("cuda"):
            raise usage_error(
                "feature_needs_cuda",
                f"{flag} runs on CUDA GPUs only; this run is on the {device}.",
                hint=f"drop {flag.split()[0]} to train on the {device}",
            )
