"""Loading the models tunelab trains and chats with.

What `--model` may name, resolved by `resolve_model_source` without loading any weights:
- the bundled SmolLM2 (`smollm2-135m-instruct`, the default), dequantized once from its GGUF
  into a standard Hugging Face directory under TUNELAB_HOME (see `catalog.bundled_model_dir`);
- a local Hugging Face model directory (config, safetensors, tokenizer);
- a tunelab training output (or one of its checkpoints): a LoRA adapter is loaded onto the base
  model its `tunelab_config.json` names and merged into it, a full fine-tune is loaded as is;
  either way the result is a plain model that chat can use and training can continue from;
- a Hugging Face Hub id, from the local cache or, when the Hub is reachable, downloaded.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

import torch

from tunelab.catalog import DEFAULT_MODEL, bundled_model_dir, has_tokenizer
from tunelab.engine.device import Capabilities, check_optional_features
from tunelab.engine.distributed import Ranks
from tunelab.engine.sources import (  # noqa: F401  (resolved here before: kept importable)
    ADAPTER_WEIGHTS,
    BUNDLED_CONTEXT,
    OUTPUT_MARKER,
    ModelInfo,
    resolve_model_source,
    resolve_training_output,
)
from tunelab.errors import TunelabError, usage_error
from tunelab.hf_quiet import quiet_progress

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    # A causal LM as the engine holds it: a transformers model, or one wrapped with a LoRA
    # adapter by peft (which forwards what it does not define to the model it wraps).
    CausalLM: TypeAlias = PreTrainedModel | PeftModel


def load_base(
    name_or_path: str | Path = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelInfo]:
    """A causal LM, its tokenizer and what it is, ready to train or generate with.

    Weights are fp32 unless `dtype` says otherwise (training keeps trained weights in fp32 and
    uses bf16 autocast where it pays); `device` defaults to CUDA when available. A LoRA
    training output comes back merged into its base: a plain model, not a PeftModel.
    `trust_remote_code` lets a model directory run its own Python code (models transformers
    does not implement); it is never on unless asked for. `load_in_4bit` loads the weights in
    4 bits (NF4) on CUDA through bitsandbytes, for QLoRA.
    """
    info = resolve_model_source(name_or_path)
    if info.kind == "trained":
        return load_trained(
            info.path, dtype=dtype, device=device, trust_remote_code=trust_remote_code
        )
    weights = bundled_model_dir(weights=True) if info.kind == "bundled" else info.path
    model = _from_pretrained(weights, dtype, device, trust_remote_code, load_in_4bit)
    return model, load_tokenizer(info, trust_remote_code=trust_remote_code), info


@overload
def load_trained(
    output_dir: str | Path,
    *,
    merge: Literal[True] = True,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelInfo]: ...


@overload
def load_trained(
    output_dir: str | Path,
    *,
    merge: bool,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[CausalLM, PreTrainedTokenizerBase, ModelInfo]: ...


def load_trained(
    output_dir: str | Path,
    *,
    merge: bool = True,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[CausalLM, PreTrainedTokenizerBase, ModelInfo]:
    """A model tunelab trained (output directory or checkpoint), with its tokenizer.

    A LoRA adapter is loaded onto its base model and, with `merge`, merged into it (faster to
    run); without, the result is a peft `PeftModel`.
    """
    info = resolve_training_output(output_dir)
    remote = trust_remote_code
    if not info.is_adapter:
        model = _from_pretrained(info.path, dtype, device, remote)
        return model, load_tokenizer(info, trust_remote_code=remote), info
    base, tokenizer, _ = load_base(
        info.base_model, dtype=dtype, device=device, trust_remote_code=remote
    )
    adapted = _with_adapter(base, info.path)
    return (adapted.merge_and_unload() if merge else adapted), tokenizer, info


def load_tokenizer(info: ModelInfo, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's fast tokenizer with its chat template (and a pad token: the EOS if unset)."""
    # transformers: loaded where it is used, so engine.config and light commands stay light
    from transformers import AutoTokenizer

    if info.kind == "bundled":
        directory = bundled_model_dir()
    elif has_tokenizer(info.path):
        directory = info.path
    elif info.kind == "trained":  # a checkpoint: the tokenizer is its base model's
        return load_tokenizer(
            resolve_model_source(info.base_model), trust_remote_code=trust_remote_code
        )
    else:
        raise usage_error(
            "not_a_model_dir",
            f"{info.path} holds no Hugging Face tokenizer (tokenizer.json / "
            "tokenizer_config.json).",
            hint="save the tokenizer next to the model with save_pretrained",
            path=info.path,
        )
    with _remote_code_refused_as_error(directory):
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(
    directory: Path,
    dtype: torch.dtype | None,
    device: str | torch.device | None,
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
) -> PreTrainedModel:
    # transformers: loaded where it is used, so engine.config and light commands stay light
    from transformers import AutoModelForCausalLM

    options = {"dtype": dtype or torch.float32, "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        options.update(_four_bit_options())
    try:
        with quiet_progress(), _remote_code_refused_as_error(directory):
            model = _with_sdpa(AutoModelForCausalLM.from_pretrained, directory, options)
    except (OSError, ValueError, KeyError) as err:
        raise TunelabError(
            "model_load_failed",
            f"cannot load a causal language model from {directory}: {err}",
            hint="a model directory needs config.json and *.safetensors (save_pretrained)",
            path=directory,
        ) from None
    if load_in_4bit:  # placed on the GPU by bitsandbytes; 4-bit weights cannot move
        return model.eval()
    if device is None:  # under torchrun, each rank's own GPU (not N copies on GPU 0)
        device = Ranks.from_env().device("cuda" if torch.cuda.is_available() else "cpu")
    # transformers wraps `to` with functools.wraps(nn.Module.to), whose type keeps the unbound
    # method's `self` parameter: mypy takes `device` for `self`.
    return model.to(device).eval()  # type: ignore[arg-type]


def _with_sdpa(
    load: Callable[..., PreTrainedModel], directory: Path, options: dict[str, Any]
) -> PreTrainedModel:
    """PyTorch's fused attention (flash / memory-efficient kernels on CUDA) where the model
    supports it; models that do not (some remote code) load with their default."""
    try:
        return load(directory, attn_implementation="sdpa", **options)
    except ValueError as err:
        if "sdpa" not in str(err).lower():
            raise
        return load(directory, **options)


def _four_bit_options() -> dict[str, Any]:
    """QLoRA's loading: NF4 weights, double quantization, bf16 (or fp16) compute."""
    caps = Capabilities.detect()
    device = "cuda" if caps.cuda else "cpu"
    check_optional_features(load_in_4bit=True, liger=False, device=device, caps=caps)
    # transformers: loaded where it is used, so engine.config and light commands stay light
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    return {"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}


@contextlib.contextmanager
def _remote_code_refused_as_error(directory: Path) -> Iterator[None]:
    """transformers refuses a model's own code unless trusted: say which flag trusts it."""
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise usage_error(
            "remote_code_not_trusted",
            f"{directory} needs to run its own Python code (a model transformers does not "
            "implement), which tunelab does not do unless asked.",
            hint="read the model's code; if you trust it, pass --trust-remote-code",
            path=directory,
        ) from None


def _with_adapter(base: torch.nn.Module, adapter_dir: Path, name: str = "default") -> PeftModel:
    # peft: loaded where it is used, so engine.config and light commands stay light
    from peft import PeftModel

    with warnings.catch_warnings(), _adapter_load_errors(adapter_dir):
        # peft reads a transformers property that transformers 5 deprecates; not ours to fix.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        model = PeftModel.from_pretrained(base, adapter_dir, adapter_name=name)
    return model.eval()


@contextlib.contextmanager
def _adapter_load_errors(adapter_dir: Path) -> Iterator[None]:
    """peft's errors loading an adapter as one `TunelabError` that says what to check."""
    try:
        yield
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise TunelabError(
            "adapter_load_failed",
            f"cannot load the adapter in {adapter_dir} onto its base model: {err}",
            hint="was the base model replaced since training? its tunelab_config.json "
            "names the base model it needs",
            path=adapter_dir,
        ) from None


def serves_unmerged(info: ModelInfo) -> bool:
    """Whether a training output can answer as an adapter beside others on one copy of its
    base (peft's per-row adapters): a LoRA adapter, not DoRA, which peft cannot mix."""
    if not info.is_adapter:
        return False
    try:
        config = json.loads((info.path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return config.get("peft_type") == "LORA" and not config.get("use_dora")


def add_adapter(model: CausalLM, adapter_dir: Path, name: str) -> PeftModel:
    """`model` with the LoRA adapter in `adapter_dir` loaded as `name`, beside the adapters
    it holds already; a plain model comes back wrapped (peft injects the LoRA layers into it,
    so its own forward would apply the active adapter from then on: call the wrapper).

    The adapter just added is made the active one only when none is: peft applies per-row
    adapters only while some adapter is active, and which one is active does not matter then.
    """
    # peft: loaded where it is used, so engine.config and light commands stay light
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return _with_adapter(model, adapter_dir, name)
    with _adapter_load_errors(adapter_dir), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
    if not model.active_adapters:
        model.set_adapter(name)
    return model.eval()


def remove_adapter(model: CausalLM, name: str) -> None:
    """Free the adapter `name`'s weights (another one becomes active, if any remains)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Adapter .* was active", UserWarning)  # as we want
        model.delete_adapter(name)
