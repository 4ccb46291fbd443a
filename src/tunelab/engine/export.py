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

from tunelab.catalog import portable_model_name
from tunelab.curves import LOSS_CURVE_FILE, loss_svg, run_metrics
from tunelab.engine.checkpoint import OUTPUT_MARKER
from tunelab.engine.lora import ADAPTER_WEIGHTS
from tunelab.engine.models import (
    load_tokenizer,
    load_trained,
    resolve_model_source,
    resolve_training_output,
)
from tunelab.errors import TunelabError, usage_error
from tunelab.hf_quiet import quiet_progress
from tunelab.io import check_writable, refuse_overwrite

ADAPTER_CONFIG = "adapter_config.json"
FORMATS = ("hf", "gguf")
GGUF_FILE = "model.gguf"


DTYPES = ("bf16", "fp16", "fp32")
MODEL_CARD = "README.md"


def export_model(
    trained_dir: str | Path,
    output_dir: str | Path,
    *,
    merge: bool = True,
    force: bool = False,
    format: str = "hf",
    gguf_type: str = "f16",
    dtype: str = "fp32",
) -> dict:
    """Write the model trained in `trained_dir` to `output_dir`; returns what was written.

    `format` is "hf" (a Hugging Face directory, or the adapter alone without `merge`) or
    "gguf" (merged weights in one GGUF file of `gguf_type` f16 or f32, and a Modelfile).
    `dtype` (bf16, fp16 or fp32) is the precision of the weights an "hf" export writes; a
    LoRA adapter is merged in fp32 first. The result's `dtype` is the precision written:
    `gguf_type` for a GGUF export. Every export holds a model card (README.md) naming
    the base model, the training data's checksum, the hyperparameters and the final losses,
    and showing the run's loss curve (`loss.svg`, written beside it).
    """
    if dtype not in DTYPES:
        choices = ", ".join(DTYPES)
        raise usage_error("invalid_dtype", f"--dtype {dtype!r}: choose one of {choices}.")
    trained_dir, output_dir = Path(trained_dir), Path(output_dir)
    _check_format(format, merge)
    info = resolve_training_output(trained_dir)
    _check_destination(output_dir, info.path, force)
    as_adapter = info.is_adapter and not merge
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        if format == "gguf":
            _write_gguf(info.path, staging, gguf_type)
        elif as_adapter:
            _write_adapter(info, staging, dtype)
        else:
            _write_merged(info.path, staging, dtype)
        _write_model_card(info, staging, gguf_type if format == "gguf" else dtype, as_adapter)
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
        "dtype": gguf_type if format == "gguf" else dtype,  # what the weights were written in
        "files": sorted(p.name for p in output_dir.iterdir()),
    }


def _check_format(format: str, merge: bool) -> None:
    if format not in FORMATS:
        raise usage_error(
            "invalid_export_format",
            f"--format must be one of {', '.join(FORMATS)} (got {format!r}).",
        )
    if format == "gguf" and not merge:
        raise usage_error(
            "gguf_needs_merge",
            "a GGUF export holds the whole model: it cannot be written with --no-merge.",
            hint="pass --merge (the default), or --format hf --no-merge for the adapter alone",
        )


def _check_destination(output_dir: Path, source: Path, force: bool) -> None:
    resolved = output_dir.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise TunelabError(
            "output_is_input",
            f"--output {output_dir} overlaps the trained model's directory {source}.",
            hint="export to a directory outside the training output",
        )
    refuse_overwrite(
        output_dir, force=force, hint="pass --force to replace it, or choose another --output"
    )
    if output_dir.exists() and not output_dir.is_dir():
        raise TunelabError("output_is_file", f"--output {output_dir} is a file, not a directory.")
    check_writable(output_dir, "--output directory")


def _torch_dtype(dtype: str):
    # torch: loaded where it is used, so engine.config and light commands stay light
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def _write_merged(trained_dir: Path, staging: Path, dtype: str) -> None:
    model, tokenizer, _ = load_trained(trained_dir, merge=True, device="cpu")
    model = model.to(_torch_dtype(dtype))
    # A model that came from a GGUF may still describe its quantization; the export must not.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with quiet_progress():
        model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def _write_gguf(trained_dir: Path, staging: Path, gguf_type: str) -> None:
    # imports torch: loaded where it is used, so engine.config and light commands stay light
    from tunelab.engine.gguf_export import write_gguf
    from tunelab.engine.ollama import modelfile

    model, tokenizer, _ = load_trained(trained_dir, merge=True, device="cpu")
    write_gguf(model, tokenizer, staging / GGUF_FILE, gguf_type)
    (staging / "Modelfile").write_text(modelfile(tokenizer, GGUF_FILE), encoding="utf-8")


def _write_adapter(info, staging: Path, dtype: str) -> None:
    """The adapter files, naming the base model portably (see `portable_model_name`)."""
    # torch: loaded where it is used, so engine.config and light commands stay light
    from safetensors.torch import load_file, save_file

    weights = load_file(info.path / ADAPTER_WEIGHTS)
    target = _torch_dtype(dtype)
    cast = {k: (v.to(target) if v.is_floating_point() else v) for k, v in weights.items()}
    save_file(cast, staging / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    config = json.loads((info.path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = resolve_model_source(info.base_model)
    if base.kind == "trained":
        raise TunelabError(
            "adapter_needs_merge",
            f"{info.path} was trained on top of another tunelab model ({base.name}), which "
            "other tools cannot load as a base.",
            hint="export it merged (--merge)",
        )
    config["base_model_name_or_path"] = portable_model_name(base.name)
    (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    load_tokenizer(info).save_pretrained(staging)


def _write_model_card(info, staging: Path, dtype: str, as_adapter: bool) -> None:
    """README.md: what another person needs to know to trust and reuse the model."""
    try:
        summary = json.loads((info.path / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    config, result = summary.get("config") or {}, summary.get("result") or {}
    metadata, dataset = summary.get("metadata") or {}, (summary.get("dataset") or {})
    base = portable_model_name(info.base_model)
    train = dataset.get("train") or {}
    checksum = metadata.get("train_file_sha256")
    data = (
        f"`{checksum}` (SHA-256 of the training file)"
        if checksum
        else (f"`{summary.get('data_fingerprint', 'unknown')}` (fingerprint of the tokenized data)")
    )
    settings = ", ".join(f"{k}={config[k]}" for k in _CARD_SETTINGS if config.get(k) is not None)
    losses = (
        [f"- final training loss: {result['train_loss']:.4f}"] if result.get("train_loss") else []
    )
    if result.get("val_loss") is not None:
        losses.append(
            f"- validation loss: {result['val_loss']:.4f} (mean token accuracy "
            f"{result.get('val_mean_token_accuracy') or 0:.1%})"
        )
    what = "a LoRA adapter (peft)" if as_adapter else "a Hugging Face causal language model"
    lines = [
        "---",
        f"base_model: {base}",
        "library_name: " + ("peft" if as_adapter else "transformers"),
        "tags: [tunelab, fine-tuned]",
        "---",
        "",
        f"# Fine-tune of {base}",
        "",
        f"This is {what}, fine-tuned from `{base}` with tunelab ({summary.get('method', '?')}), "
        f"weights in {dtype}.",
        "",
        "## Training",
        "",
        f"- base model: `{base}`",
        f"- training data: {train.get('n_examples', '?')} examples, "
        f"{train.get('trained_tokens', '?')} trained tokens; checksum {data}",
        f"- hyperparameters: {settings}",
        f"- steps: {result.get('step', '?')} of {result.get('total_steps', '?')}",
        f"- trained: {summary.get('created_at', 'unknown')}",
        "",
        "## Evaluation",
        "",
        *(losses or ["No evaluation recorded."]),
        "",
        *_loss_curve(info.path, staging),
    ]
    (staging / MODEL_CARD).write_text("\n".join(lines), encoding="utf-8")


def _loss_curve(trained_dir: Path, staging: Path) -> list[str]:
    """`loss.svg` beside the card (drawn from the run's steps, up to a checkpoint's) and the
    card's lines showing it; nothing when the run left no steps."""
    found = run_metrics(trained_dir)
    svg = loss_svg(found[1], title="training loss") if found else ""
    if not svg:
        return []
    (staging / LOSS_CURVE_FILE).write_text(svg, encoding="utf-8")
    return [
        "## Training loss",
        "",
        f"![Training and validation loss per step]({LOSS_CURVE_FILE})",
        "",
    ]


_CARD_SETTINGS = (
    "method",
    "n_epochs",
    "batch_size",
    "learning_rate",
    "lr_scheduler",
    "warmup_steps",
    "max_seq_len",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "weight_decay",
    "max_grad_norm",
    "seed",
    "max_steps",
    "precision",
)


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
