"""What a model name or path refers to, without loading it (and without importing torch).

`resolve_model_source` tells the bundled model, a Hugging Face directory, a tunelab
training output (or checkpoint) and a Hub id apart, and refuses anything else with a clear
`TunelabError`: commands call it before any heavy work (loading data, importing torch), so a
mistyped `--model` fails at once. `tunelab.engine.models` loads what it resolves.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from tunelab.catalog import DEFAULT_MODEL, model_context_length, resolve_model
from tunelab.curves import METRICS_FILE
from tunelab.errors import TunelabError, usage_error
from tunelab.settings import get_settings

BUNDLED_CONTEXT = 8_192
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Files a causal LM needs from the Hub: no other frameworks' weights, no README images.
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]
_HUB_TIMEOUT_S = 5
# The files of a training output (the checkpoint and LoRA modules name them too).
OUTPUT_MARKER = "tunelab_config.json"  # written last: its presence means the output is complete
META_FILE = "checkpoint.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


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
    raise usage_error(
        "unknown_model",
        f"{text!r} is not a directory, the bundled model or a Hugging Face Hub id.",
        hint=f"pass {DEFAULT_MODEL}, a Hugging Face model directory, a tunelab training "
        "output directory, or a Hub id such as HuggingFaceTB/SmolLM2-360M-Instruct",
    )


def resolve_training_output(output_dir: str | Path) -> ModelInfo:
    """What a tunelab training output (or one of its checkpoints) holds; anything else is
    refused, for what only tunelab's own runs can give (merging, exporting)."""
    info = resolve_model_source(output_dir)
    if info.kind != "trained":
        raise TunelabError(
            "not_a_training_output",
            f"{output_dir} is not a tunelab training output (no {OUTPUT_MARKER}).",
            hint="pass the --output directory of a finished `tunelab train` run",
            path=output_dir,
        )
    return info


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
    if not spec.open_weights:
        raise usage_error(
            "not_a_local_model",
            f"{spec.name} is an OpenAI model: its weights cannot be loaded here.",
            hint=f"train locally from {DEFAULT_MODEL}, a Hugging Face directory or a Hub id",
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
        raise usage_error(
            "not_a_model_dir",
            f"{path} is not a Hugging Face model directory (no config.json).",
            hint="pass a directory written by save_pretrained, or a tunelab training output",
            path=path,
        )
    return ModelInfo(name, kind, path, name, model_context_length(path))


def _hub_offline() -> bool:
    values = (os.environ.get(name, "") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(value.strip().lower() in ("1", "true", "yes", "on") for value in values)


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a Hub model: from the cache, else downloaded if the Hub answers."""
    # the Hub client: loaded where it is used, so engine.config and light commands stay light
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES, local_files_only=True))
    except Exception:  # not cached (the exception class differs across hub versions)
        pass
    if _hub_offline():
        raise usage_error(
            "hub_unreachable",
            f"{repo_id} is not a local directory and not in the Hugging Face cache, and the "
            "Hub is offline (HF_HUB_OFFLINE is set).",
            hint="download it where the Hub is reachable, or pass a local model directory",
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
    # the Hub client: loaded where it is used, so engine.config and light commands stay light
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(repo_id, timeout=_HUB_TIMEOUT_S)
    except (RepositoryNotFoundError, GatedRepoError):
        raise usage_error(
            "unknown_model",
            f"{repo_id!r} is neither a local directory nor a model on the Hugging Face Hub "
            "you can access.",
            hint="check the spelling, or the path if you meant a local directory",
        ) from None
    except Exception as err:
        raise usage_error(
            "hub_unreachable",
            f"{repo_id} is not a local directory and the Hugging Face Hub cannot be reached "
            f"({type(err).__name__}).",
            hint="pass a local model directory, or retry when the network is available",
        ) from None
