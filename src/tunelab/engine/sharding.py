"""Fully sharded data parallel (FSDP2) for full fine-tuning of models that do not fit one device.

With `--distributed fsdp` and several ranks, each decoder block and then the whole model are
wrapped with `torch.distributed.fsdp.fully_shard`: every rank keeps 1/N of each weight, of its
gradient and of AdamW's state, and gathers a block's weights only while that block computes.
The rest of the loop is DDP's (engine/distributed.py): the same batches cut into the same
micro-batches, each rank's loss divided by the whole step's trained-token count, and the
gradients summed over ranks (FSDP reduce-scatters them; its default would average, so the
divide factor is 1).

What sharding changes, each because every rank must make the same collective calls:
- every rank runs the same number of forward/backward passes per step and per validation
  pass; a rank with fewer micro-batches than another runs a padding pass whose loss counts
  zero (`even_share`);
- the loss reaches the output head through the model's own forward (the root's weights are
  gathered there), with only trained positions projected (`masked_logits`);
- gradient clipping computes the norm of sharded gradients as one DTensor, made whole before
  clipping (`clip_gradients`);
- checkpoints and the output gather the full weights and optimizer state to rank 0
  (`gather_full_state`), which writes them in the unsharded layout: every checkpoint and the
  output stay a normal Hugging Face directory; resuming reads them on rank 0 and broadcasts
  each tensor to the ranks' shards (`load_full_state`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from tunelab.engine.distributed import Ranks

if TYPE_CHECKING:
    from torch.distributed.checkpoint.state_dict import ValueType
    from transformers import PreTrainedModel

    from tunelab.engine.models import CausalLM

Model = TypeVar("Model", bound=torch.nn.Module)

# Optimizer state keyed by parameter name (torch.distributed.checkpoint's full layout), not
# by the optimizer's parameter numbers: how a checkpoint says which layout it holds.
NAMED_OPTIMIZER_LAYOUT = "named"
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
_SCATTER = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def shard_model(model: Model, device: torch.device, ranks: Ranks) -> Model:
    """Shard each decoder block, then the root (embeddings, final norm, head), over the ranks.

    The model may still be on the CPU: fully_shard moves each block's shard to `device`, so the
    whole model never has to fit there. The decoder blocks are the classes the model lists as
    never to be split across devices (`_no_split_modules`, what accelerate wraps too)."""
    mesh = init_device_mesh(device.type, (ranks.world_size,))
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if module is not model and type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():  # each block's setting is its own
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # sum over ranks: each loss is its share
            # A plain SUM (not NCCL's pre-multiplied sum, which gloo lacks).
            module.set_force_sum_reduction_for_comms(True)
    return model


def even_share(groups: list, ranks: Ranks) -> list:
    """This rank's groups (r, r + N, …), padded with None to as many as any rank gets: a
    sharded model's passes are collectives, so every rank must run the same number."""
    mine = ranks.mine(groups)
    most = -(-len(groups) // ranks.world_size)
    return mine + [None] * (most - len(mine))


def masked_logits(model: CausalLM, inputs: dict, mask: torch.Tensor) -> torch.Tensor:
    """The logits of the trained positions (`mask`), computed through the model's forward.

    Calling the decoder and the head separately (as an unsharded model does) would skip the
    root's forward, where its sharded weights are gathered; a hook on the head projects only
    the masked positions instead, so the vocabulary-sized matmul stays as small."""
    head = model.get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda module, args: (args[0][mask],))
    try:
        return model(**inputs).logits
    finally:
        hook.remove()


def clip_gradients(parameters: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip sharded gradients to `max_norm` in total; returns the norm before clipping.

    The norm of DTensor gradients is a DTensor holding each rank's partial sum: it is made
    whole (a collective) before it scales the gradients."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return float(total)


@dataclass
class FullState:
    """Unsharded weights and optimizer state, on rank 0's CPU (empty on the other ranks)."""

    model: dict[str, torch.Tensor]
    optimizer: dict = field(default_factory=dict)


def gather_full_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> FullState:
    """Gather the whole model (and optimizer state) to rank 0: every rank must call this."""
    # torch types a state dict's values as any of its layouts; a full one holds tensors.
    weights = cast(dict[str, torch.Tensor], get_model_state_dict(model, options=_GATHER))
    for name in _tied_names(model):  # saved once, as an unsharded model's save_pretrained does
        weights.pop(name, None)
    if optimizer is None:
        return FullState(weights)
    return FullState(weights, get_optimizer_state_dict(model, optimizer, options=_GATHER))


def _tied_names(model: torch.nn.Module) -> list[str]:
    """Names of parameters that are another name's parameter (a tied output head)."""
    seen, tied = set(), []
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:
            tied.append(name)
        seen.add(id(parameter))
    return tied


def load_full_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict,
) -> None:
    """Load full state read by rank 0 into every rank's shards (a broadcast per tensor;
    the other ranks pass empty dicts). Tied weights saved once fill both names."""
    # torch takes a dict (invariant) of any of its layouts' values; ours holds tensors.
    set_model_state_dict(model, cast("dict[str, ValueType]", weights), options=_SCATTER)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=_SCATTER)


def fix_architecture_name(model: PreTrainedModel, directory: os.PathLike) -> None:
    """fully_shard gives the model a class of its own (`FSDPLlamaForCausalLM`) that
    save_pretrained writes into config.json; serving engines read the original name there."""
    if not is_sharded(model):
        return
    original = next(c for c in type(model).__mro__[1:] if not issubclass(c, FSDPModule))
    model.config.architectures = [original.__name__]
    model.config.save_pretrained(directory)


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """No autograd during validation: inference mode for an unsharded model; plain no_grad
    for a sharded one, whose gathered weights are reused by the next training step."""
    with torch.no_grad() if is_sharded(model) else torch.inference_mode():
        yield
