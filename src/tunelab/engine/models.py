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
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tunelab.catalog import (
    DEFAULT_MODEL,
    bundled_model_dir,
    has_tokenizer,
    model_context_length,
    resolve_model,
)
from tunelab.engine.checkpoint import META_FILE, METRICS_FILE, OUTPUT_MARKER
from tunelab.engine.distributed import Ranks
from tunelab.engine.lora import ADAPTER_WEIGHTS, _quiet_progress
from tunelab.errors import TunelabError
from tunelab.settings import get_settings

BUNDLED_CONTEXT = 8_192
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Files a causal LM needs from the Hub: no other frameworks' weights, no README images.
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]
_HUB_TIMEOUT_S = 5


@dataclass(frozen=True)
class ModelInfo:
    """What a model name or path refers to.

    `name` is how training outputs record it (the alias, an absolute directory, a Hub id);
    `kind` is "bundled", "directory", "hub" or "trained"; `path` the directory holding its
    weights (for an adapter: the adapter); `base_model` the model a trained one started from.
    """

    name: str
    kind: str
    path: Path
    base_model: str
    context_length: int | None
    is_adapter: bool = False
    method: str | None = None  # "lora" or "full" for trained models

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def resolve_model_source(name_or_path: str | Path = DEFAULT_MODEL) -> ModelInfo:
    """What `name_or_path` refers to; raises TunelabError for anything that is not loadable."""
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if _is_training_dir(path):
            return _trained_info(path.resolve())
        return _directory_info(path.resolve(), str(path.resolve()), "directory")
    if text.lower() in _bundled_names():
        target = get_settings().models_dir / DEFAULT_MODEL
        return ModelInfo(DEFAULT_MODEL, "bundled", target, DEFAULT_MODEL, BUNDLED_CONTEXT)
    _refuse_hosted(text)
    if _HUB_ID.fullmatch(text):
        return _directory_info(_hub_snapshot(text), text, "hub")
    raise TunelabError(
        "unknown_model",
        f"{text!r} is not a directory, the bundled model or a Hugging Face Hub id.",
        hint=f"pass {DEFAULT_MODEL}, a Hugging Face model directory, a tunelab training "
        "output directory, or a Hub id such as HuggingFaceTB/SmolLM2-360M-Instruct",
        exit_code=2,
    )


def load_base(
    name_or_path: str | Path = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
) -> tuple[torch.nn.Module, object, ModelInfo]:
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


def load_trained(
    output_dir: str | Path,
    *,
    merge: bool = True,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
) -> tuple[torch.nn.Module, object, ModelInfo]:
    """A model tunelab trained (output directory or checkpoint), with its tokenizer.

    A LoRA adapter is loaded onto its base model and, with `merge`, merged into it (faster to
    run); without, the result is a peft `PeftModel`.
    """
    info = resolve_model_source(output_dir)
    if info.kind != "trained":
        raise TunelabError(
            "not_a_training_output",
            f"{output_dir} is not a tunelab training output (no {OUTPUT_MARKER}).",
            hint="pass the --output directory of a finished `tunelab train` run",
            path=output_dir,
        )
    remote = trust_remote_code
    if not info.is_adapter:
        model = _from_pretrained(info.path, dtype, device, remote)
        return model, load_tokenizer(info, trust_remote_code=remote), info
    base, tokenizer, _ = load_base(
        info.base_model, dtype=dtype, device=device, trust_remote_code=remote
    )
    model = _with_adapter(base, info.path)
    return (model.merge_and_unload() if merge else model), tokenizer, info


def load_tokenizer(info: ModelInfo, *, trust_remote_code: bool = False):
    """The model's fast tokenizer with its chat template (and a pad token: the EOS if unset)."""
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
        raise TunelabError(
            "not_a_model_dir",
            f"{info.path} holds no Hugging Face tokenizer (tokenizer.json / "
            "tokenizer_config.json).",
            hint="save the tokenizer next to the model with save_pretrained",
            path=info.path,
            exit_code=2,
        )
    with _remote_code_refused_as_error(directory):
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _bundled_names() -> set[str]:
    spec = resolve_model(DEFAULT_MODEL)
    return {spec.name.lower(), *(alias.lower() for alias in spec.aliases)}


def _refuse_hosted(text: str) -> None:
    """OpenAI's models have no weights to load. (Open models that Together hosts are Hub
    ids: those load from the Hub like any other.)"""
    try:
        spec = resolve_model(text)
    except TunelabError:
        return
    if spec.provider == "openai":
        raise TunelabError(
            "not_a_local_model",
            f"{spec.name} is an OpenAI model: its weights cannot be loaded here.",
            hint=f"train locally from {DEFAULT_MODEL}, a Hugging Face directory or a Hub id",
            exit_code=2,
        )


def _is_training_dir(path: Path) -> bool:
    """A finished run, a checkpoint, or an unfinished run (refused with a hint)."""
    if (path / OUTPUT_MARKER).is_file() or (path / META_FILE).is_file():
        return True
    if (path / METRICS_FILE).exists() or (path / "checkpoints").is_dir():
        raise TunelabError(
            "training_unfinished",
            f"{path} holds a training run that has not finished.",
            hint="finish it with `tunelab train ... --resume`, or pass one of its "
            f"checkpoints ({path / 'checkpoints'}/step-...)",
            path=path,
        )
    return False


def _trained_info(path: Path) -> ModelInfo:
    base, method = _read_training_summary(path)
    if not base:
        raise TunelabError(
            "base_model_unknown",
            f"{path} does not record the base model it was trained from.",
            hint="train through `tunelab train` (or pass base_model= to the engine's train())",
            path=path,
        )
    if Path(base).expanduser().resolve() == path:
        raise TunelabError(
            "training_output_loop",
            f"{path} names itself as its base model.",
            hint="train into a new --output directory when training further from a model",
            path=path,
        )
    is_adapter = (path / ADAPTER_WEIGHTS).is_file()
    if not is_adapter and not (path / "config.json").is_file():
        raise TunelabError(
            "trained_weights_missing",
            f"{path} holds neither an adapter ({ADAPTER_WEIGHTS}) nor model weights.",
            path=path,
        )
    if is_adapter:
        context = resolve_model_source(base).context_length
    else:
        context = model_context_length(path)
    return ModelInfo(str(path), "trained", path, base, context, is_adapter, method)


def _read_training_summary(path: Path) -> tuple[str | None, str | None]:
    """(base model, method) from a run's tunelab_config.json or a checkpoint's metadata."""
    try:
        if (path / OUTPUT_MARKER).is_file():
            summary = json.loads((path / OUTPUT_MARKER).read_text(encoding="utf-8"))
            return summary.get("base_model"), summary.get("method")
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        return meta["metadata"].get("base_model"), meta["config"].get("method")
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise TunelabError(
            "training_output_unreadable", f"cannot read {path}: {err}", path=path
        ) from None


def _directory_info(path: Path, name: str, kind: str) -> ModelInfo:
    if not (path / "config.json").is_file():
        raise TunelabError(
            "not_a_model_dir",
            f"{path} is not a Hugging Face model directory (no config.json).",
            hint="pass a directory written by save_pretrained, or a tunelab training output",
            path=path,
            exit_code=2,
        )
    return ModelInfo(name, kind, path, name, model_context_length(path))


def _from_pretrained(
    directory: Path,
    dtype: torch.dtype | None,
    device: str | torch.device | None,
    trust_remote_code: bool = False,
    load_in_4bit: bool = False,
) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    options = {"dtype": dtype or torch.float32, "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        options.update(_four_bit_options())
    try:
        with _quiet_progress(), _remote_code_refused_as_error(directory):
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
    return model.to(device).eval()


def _with_sdpa(load, directory: Path, options: dict) -> torch.nn.Module:
    """PyTorch's fused attention (flash / memory-efficient kernels on CUDA) where the model
    supports it; models that do not (some remote code) load with their default."""
    try:
        return load(directory, attn_implementation="sdpa", **options)
    except ValueError as err:
        if "sdpa" not in str(err).lower():
            raise
        return load(directory, **options)


def _four_bit_options() -> dict:
    """QLoRA's loading: NF4 weights, double quantization, bf16 (or fp16) compute."""
    from tunelab.engine.device import Capabilities, check_optional_features

    caps = Capabilities.detect()
    device = "cuda" if caps.cuda else "cpu"
    check_optional_features(load_in_4bit=True, liger=False, device=device, caps=caps)
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
        raise TunelabError(
            "remote_code_not_trusted",
            f"{directory} needs to run its own Python code (a model transformers does not "
            "implement), which tunelab does not do unless asked.",
            hint="read the model's code; if you trust it, pass --trust-remote-code",
            path=directory,
            exit_code=2,
        ) from None


def _with_adapter(base: torch.nn.Module, adapter_dir: Path) -> torch.nn.Module:
    from peft import PeftModel

    with warnings.catch_warnings():
        # peft reads a transformers property that transformers 5 deprecates; not ours to fix.
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        try:
            model = PeftModel.from_pretrained(base, adapter_dir)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise TunelabError(
                "adapter_load_failed",
                f"cannot load the adapter in {adapter_dir} onto its base model: {err}",
                hint="was the base model replaced since training? its tunelab_config.json "
                "names the base model it needs",
                path=adapter_dir,
            ) from None
    return model.eval()


def _hub_offline() -> bool:
    values = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(value.strip().lower() in ("1", "true", "yes", "on") for value in values)


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a Hub model: from the cache, else downloaded if the Hub answers."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES, local_files_only=True))
    except Exception:  # not cached (the exception class differs across hub versions)
        pass
    if _hub_offline():
        raise TunelabError(
            "hub_unreachable",
            f"{repo_id} is not a local directory and not in the Hugging Face cache, and the "
            "Hub is offline (HF_HUB_OFFLINE is set).",
            hint="download it where the Hub is reachable, or pass a local model directory",
            exit_code=2,
        )
    _check_on_hub(repo_id)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES, etag_timeout=10))
    except Exception as err:
        raise TunelabError(
            "hub_download_failed", f"downloading {repo_id} from the Hub failed: {err}"
        ) from None


def _check_on_hub(repo_id: str) -> None:
    """Ask the Hub about `repo_id` with a short timeout: an unreachable Hub fails fast."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(repo_id, timeout=_HUB_TIMEOUT_S)
    except (RepositoryNotFoundError, GatedRepoError):
        raise TunelabError(
            "unknown_model",
            f"{repo_id!r} is neither a local directory nor a model on the Hugging Face Hub "
            "you can access.",
            hint="check the spelling, or the path if you meant a local directory",
            exit_code=2,
        ) from None
    except Exception as err:
        raise TunelabError(
            "hub_unreachable",
            f"{repo_id} is not a local directory and the Hugging Face Hub cannot be reached "
            f"({type(err).__name__}).",
            hint="pass a local model directory, or retry when the network is available",
            exit_code=2,
        ) from None
