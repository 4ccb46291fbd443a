"""Data-parallel training across processes started by torchrun (several GPUs or machines).

Every rank loads the same model, tokenizes the same data and draws the same length-bucketed
batches (same seed), so no sampler has to agree on anything: each optimizer step's batch is
cut into `ranks × gradient-accumulation` micro-batches of similar length, and rank r takes
micro-batches r, r + ranks, …: a DistributedSampler for bucketed batches. Each rank divides
its summed token loss by the whole batch's trained-token count, and the gradients are summed
across ranks (one all-reduce per step, as DDP does), so a step computes exactly the update one
process would make on the whole batch. Weights therefore stay identical on every rank;
rank 0 alone writes metrics, checkpoints and the output, and every rank reads the checkpoint
it resumes from (the output directory must be shared between machines).

CUDA ranks use NCCL and the GPU of their local rank; CPU ranks use gloo.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """The ranks torchrun describes in the environment (one process without it)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> str:
        """A CUDA rank trains on the GPU of its local rank."""
        if self.active and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device

    def start(self, device: str) -> bool:
        """Join the process group (once); True if this call started it."""
        if not self.active or dist.is_initialized():
            return False
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return True

    def mine(self, groups: list) -> list:
        return groups[self.rank :: self.world_size]

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over ranks, in place."""
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def sum_gradients(self, parameters: list[torch.nn.Parameter]) -> None:
        """Sum every gradient over ranks in one all-reduce (a rank without examples in a step
        contributes zeros)."""
        if not self.active:
            return
        grads = []
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            grads.append(parameter.grad)
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        for grad, summed in zip(
            grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True
        ):
            grad.copy_(summed)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if `flag` is true on any (e.g. one rank was asked to cancel)."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        return bool(self.sum_(value).item() > 0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def stop(started: bool) -> None:
    if started and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_command(
    args: list[str],
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int | None = None,
    rdzv_endpoint: str | None = None,
    *,
    module: str = "tunelab",
    every_rank_output: bool = False,
) -> list[str]:
    """The command that runs `python -m MODULE ARGS` (`tunelab ARGS`) in `nproc_per_node`
    processes on each of `nnodes` machines; only local rank 0's output is shown unless
    `every_rank_output` (a log, where any rank's error matters)."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1 and rdzv_endpoint is None:
        command.append("--standalone")
    else:
        command += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
        if node_rank is not None:
            command.append(f"--node-rank={node_rank}")
    if not every_rank_output:
        command.append("--local-ranks-filter=0")
    return [*command, "-m", module, *args]
