"""`export_model`: a trained model as a standard Hugging Face directory, usable without tunelab.

Merged (the default): the LoRA adapter is folded into the base weights, and the directory is
what `AutoModelForCausalLM.from_pretrained` and every HF-compatible server load directly.
Unmerged: the adapter alone in peft's layout, its `adapter_config.json` naming the base
model's directory, for tools that load adapters (peft, vLLM's LoRA support). A full
fine-tune is a complete model either way. The tokenizer and its chat template come along.
`format="gguf"`: the merged model as one GGUF file (`model.gguf`, see `gguf_export`) with an
Ollama `Modelfile` carrying the chat template, for llama.cpp and Ollama.

The directory is written beside its destination under a temporary name and renamed into
place when complete; an existing one is replaced only with `force`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from tunelab.catalog import bundled_model_dir
from tunelab.engine.lora import ADAPTER_WEIGHTS, _quiet_progress
from tunelab.engine.models import load_tokenizer, load_trained, resolve_model_source
from tunelab.errors import TunelabError
from tunelab.io import check_writable

ADAPTER_CONFIG = "adapter_config.json"
FORMATS = ("hf", "gguf")
GGUF_FILE = "model.gguf"


def export_model(
    trained_dir: str | Path,
    output_dir: str | Path,
    *,
    merge: bool = True,
    force: bool = False,
    format: str = "hf",
    gguf_type: str = "f16",
) -> dict:
    """Write the model trained in `trained_dir` to `output_dir`; returns what was written.

    `format` is "hf" (a Hugging Face directory, or the adapter alone without `merge`) or
    "gguf" (merged weights in one GGUF file of `gguf_type` f16 or f32, and a Modelfile).
    """
    trained_dir, output_dir = Path(trained_dir), Path(output_dir)
    _check_format(format, merge)
    info = resolve_model_source(trained_dir)
    if info.kind != "trained":
        raise TunelabError(
            "not_a_training_output",
            f"{trained_dir} is not a tunelab training output.",
            hint="pass the --output directory of a finished `tunelab train` run",
            path=trained_dir,
        )
    _check_destination(output_dir, info.path, force)
    as_adapter = info.is_adapter and not merge
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        if format == "gguf":
            _write_gguf(info.path, staging, gguf_type)
        elif as_adapter:
            _write_adapter(info, staging)
        else:
            _write_merged(info.path, staging)
        _share(staging)
        _replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "output_dir": str(output_dir),
        "source": str(info.path),
        "base_model": info.base_model,
        "method": info.method,
        "merged": info.is_adapter and not as_adapter,
        "format": "gguf" if format == "gguf" else "peft_adapter" if as_adapter else "hf_model",
        "files": sorted(p.name for p in output_dir.iterdir()),
    }


def _check_format(format: str, merge: bool) -> None:
    if format not in FORMATS:
        raise TunelabError(
            "invalid_export_format",
            f"--format must be one of {', '.join(FORMATS)} (got {format!r}).",
            exit_code=2,
        )
    if format == "gguf" and not merge:
        raise TunelabError(
            "gguf_needs_merge",
            "a GGUF export holds the whole model: it cannot be written with --no-merge.",
            hint="pass --merge (the default), or --format hf --no-merge for the adapter alone",
            exit_code=2,
        )


def _check_destination(output_dir: Path, source: Path, force: bool) -> None:
    resolved = output_dir.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise TunelabError(
            "output_is_input",
            f"--output {output_dir} overlaps the trained model's directory {source}.",
            hint="export to a directory outside the training output",
        )
    if output_dir.exists() and not force:
        raise TunelabError(
            "output_exists",
            f"{output_dir} already exists.",
            hint="pass --force to replace it, or choose another --output",
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise TunelabError("output_is_file", f"--output {output_dir} is a file, not a directory.")
    check_writable(output_dir, "--output directory")


def _write_merged(trained_dir: Path, staging: Path) -> None:
    model, tokenizer, _ = load_trained(trained_dir, merge=True, device="cpu")
    # A model that came from a GGUF may still describe its quantization; the export must not.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with _quiet_progress():
        model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def _write_gguf(trained_dir: Path, staging: Path, gguf_type: str) -> None:
    from tunelab.engine.gguf_export import write_gguf
    from tunelab.engine.ollama import modelfile

    model, tokenizer, _ = load_trained(trained_dir, merge=True, device="cpu")
    write_gguf(model, tokenizer, staging / GGUF_FILE, gguf_type)
    (staging / "Modelfile").write_text(modelfile(tokenizer, GGUF_FILE), encoding="utf-8")


def _write_adapter(info, staging: Path) -> None:
    """The adapter files, with the base model's directory recorded where peft looks for it."""
    shutil.copy2(info.path / ADAPTER_WEIGHTS, staging / ADAPTER_WEIGHTS)
    config = json.loads((info.path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = resolve_model_source(info.base_model)
    if base.kind == "trained":
        raise TunelabError(
            "adapter_needs_merge",
            f"{info.path} was trained on top of another tunelab model ({base.name}), which "
            "other tools cannot load as a base.",
            hint="export it merged (--merge)",
        )
    if base.kind == "bundled":
        base_path = str(bundled_model_dir(weights=True))
    else:
        base_path = base.name if base.kind == "hub" else str(base.path)
    config["base_model_name_or_path"] = base_path
    (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    load_tokenizer(info).save_pretrained(staging)


def _replace(staging: Path, output_dir: Path) -> None:
    """Move the finished export into place; a replaced export is removed only afterwards."""
    if not output_dir.exists():
        os.rename(staging, output_dir)
        return
    old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
    os.rename(output_dir, old)
    os.rename(staging, output_dir)
    shutil.rmtree(old, ignore_errors=True)


def _share(staging: Path) -> None:
    """Normal permissions: mkdtemp (and safetensors) make private files; exports are shared."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    for file in staging.iterdir():
        os.chmod(file, 0o666 & ~umask)
