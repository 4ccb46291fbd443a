"""Making a model trainable (a LoRA adapter or every weight) and saving what was trained.

What is saved is only what training changed: the adapter for LoRA (`adapter_model.safetensors`
+ `adapter_config.json`, loadable with peft's `PeftModel.from_pretrained`), the whole model for
full fine-tuning (a standard Hugging Face directory). Checkpoints and the final output use the
same layout, so any complete checkpoint is itself a loadable model.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file

from tunelab.catalog import portable_model_name
from tunelab.engine.config import ResolvedConfig
from tunelab.engine.device import use_gradient_checkpointing
from tunelab.engine.sharding import fix_architecture_name
from tunelab.engine.sources import ADAPTER_WEIGHTS
from tunelab.errors import TunelabError, usage_error
from tunelab.hf_quiet import quiet_progress

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tunelab.engine.models import CausalLM

FULL_WEIGHTS = "model.safetensors"
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _apply_memory_and_kernel_options(model: PreTrainedModel, config: ResolvedConfig) -> None:
    if config.use_liger_kernel:
        # an optional GPU extra, installed only where it is used
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=model)
    if config.load_in_4bit:
        # peft: loaded where it is used, so engine.config and light commands stay light
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    n_parameters = sum(p.numel() for p in model.parameters())
    if use_gradient_checkpointing(config.gradient_checkpointing, n_parameters):
        # Non-reentrant checkpointing needs no input that requires grad (frozen embeddings
        # under LoRA) and works with autocast.
        options = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
        model.config.use_cache = False


def prepare_model(model: PreTrainedModel, config: ResolvedConfig) -> CausalLM:
    """The model to train: `model` wrapped with a fresh LoRA adapter, or `model` itself.

    The model is modified in place (adapter layers injected, dtypes changed). Trained weights
    are fp32 (bf16 autocast computes with bf16 copies); for LoRA in bf16 the frozen base
    weights are stored in bf16 up front, since autocast would otherwise re-cast every frozen
    weight on every forward pass and keep the casts alive until backward (fp16 likewise).
    GPU options are applied first: Liger's kernels, QLoRA's preparation of a 4-bit base, and
    gradient checkpointing (see engine.device).
    """
    _apply_memory_and_kernel_options(model, config)
    if config.method == "full":
        model.float()
        model.requires_grad_(True)
        return model
    targets = list(config.lora_target_modules) if config.lora_target_modules else "all-linear"
    lora = LoraConfig(
        r=config.lora_rank,
        # peft annotates lora_alpha as int, but scales by alpha / r with any number.
        lora_alpha=config.lora_alpha,  # type: ignore[arg-type]
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():
            # peft reads a transformers property that transformers 5 deprecates; not ours to fix.
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
            # A PeftMixedModel only when asked for one (mixed=True), which peft's type omits.
            peft_model = cast(PeftModel, get_peft_model(model, lora))
    except ValueError as err:
        raise usage_error(
            "invalid_config",
            f"--lora-target-modules: {err}",
            hint="name linear layers of the model, e.g. q_proj,k_proj,v_proj,o_proj",
        ) from None
    half = _HALF.get(config.precision)
    for parameter in peft_model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
        elif half is not None and parameter.is_floating_point() and not config.load_in_4bit:
            parameter.data = parameter.data.to(half)
    _speed_up_adapter_layers(peft_model, config)
    return peft_model


def _speed_up_adapter_layers(model: PeftModel, config: ResolvedConfig) -> None:
    """Remove two costs peft's LoRA layers add on CPU (measured on SmolLM2-135M, batch 8):

    - under bf16 autocast, peft casts each layer's input to the adapter's fp32 and autocast
      casts it back to bf16 for the matmul: two copies of every activation for nothing;
    - torch's CPU dropout draws one Bernoulli sample per element, single-threaded: with
      dropout on 7 projections per layer it took a quarter of a LoRA step.
    """
    on_cpu = next(model.parameters()).device.type == "cpu"
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        if config.precision in _HALF:
            module.cast_input_dtype_enabled = False
        for name, dropout in module.lora_dropout.items():
            if on_cpu and isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                module.lora_dropout[name] = FastDropout(dropout.p)


class FastDropout(torch.nn.Module):
    """Dropout with 16 random bits per element cut from 64-bit draws: about 2.5x faster than
    `torch.nn.Dropout` on CPU. The drop probability is exact to 1/65536."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        n = x.numel()
        draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), device=x.device)
        bits = draws.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
        keep = bits >= round(self.p * 65536) - 32768
        return x * keep * (1 / (1 - self.p))


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def save_weights(
    model: CausalLM, directory: Path, state_dict: dict[str, torch.Tensor] | None = None
) -> list[Path]:
    """Write what training changed into `directory`; returns the files written.
    `state_dict`: a sharded model's full weights, gathered (engine.sharding)."""
    if isinstance(model, PeftModel):
        # Embeddings are never adapted, so peft need not look for the base model's files.
        adapter = get_peft_model_state_dict(model, save_embedding_layers=False)
        state = {k: v.detach().contiguous() for k, v in adapter.items()}
        save_file(state, directory / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        config = model.peft_config[model.active_adapter]
        # peft records where the base was loaded from: under TUNELAB_HOME, or another
        # absolute path that means nothing on another machine. tunelab itself reads the
        # base model from tunelab_config.json.
        if config.base_model_name_or_path:
            config.base_model_name_or_path = portable_model_name(config.base_model_name_or_path)
        config.save_pretrained(str(directory))
        return [directory / ADAPTER_WEIGHTS, directory / "adapter_config.json"]
    with quiet_progress():
        # One file (transformers 4 would shard above 5 GB), so that resume finds it by name.
        model.save_pretrained(directory, max_shard_size="50GB", state_dict=state_dict)
    if state_dict is not None:
        fix_architecture_name(model, directory)
    return [directory / FULL_WEIGHTS, directory / "config.json"]


def load_weights(model: CausalLM, directory: Path) -> None:
    """Load weights written by `save_weights` back into the same (prepared) model."""
    if isinstance(model, PeftModel):
        state = load_file(directory / ADAPTER_WEIGHTS, device=str(_device(model)))
        result = set_peft_model_state_dict(model, state)
        # peft annotates the result as `namedtuple` (the factory); it is load_state_dict's.
        unexpected = result.unexpected_keys  # type: ignore[attr-defined]
    else:
        state = load_file(directory / FULL_WEIGHTS, device=str(_device(model)))
        # Tied weights (e.g. the output head) are saved once; loading fills both.
        unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:
        raise TunelabError(
            "checkpoint_mismatch",
            f"checkpoint {directory} holds weights this model does not have: {unexpected[:3]}",
            hint="resume with the same base model and --method as the interrupted run",
        )


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
