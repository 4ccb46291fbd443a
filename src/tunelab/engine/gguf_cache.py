"""Any local model as a GGUF file for llama.cpp, converted once and cached.

The model is loaded merged (a LoRA fine-tune folded into its base, as `tunelab export
--format gguf` does) and written by the same writer (`gguf_export.write_gguf`), under
`TUNELAB_HOME/gguf/`, named by a checksum of the weights it came from (an adapter's and its
base's): a model trained again gets a new file, the same weights find the old one. A file
appears complete or not at all (written under a temporary name, then renamed), so concurrent
processes never read half of one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from tunelab.catalog import bundled_model_dir
from tunelab.engine.sources import ModelInfo, resolve_model_source
from tunelab.settings import writable_home

WEIGHT_SUFFIXES = (".safetensors", ".bin")
_READ_BYTES = 1 << 20


def cached_gguf(source: str, gguf_type: str = "f16") -> Path:
    """The GGUF file of the model `source` names (merged), converted on first use."""
    info = resolve_model_source(source)
    directory = writable_home("cache models converted for llama.cpp") / "gguf"
    path = directory / f"{weights_checksum(info)[:32]}-{gguf_type}.gguf"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    _convert(source, path, gguf_type)
    return path


def weights_checksum(info: ModelInfo) -> str:
    """sha256 over the model's weight files (and its base's, for an adapter), in name order."""
    digest = hashlib.sha256()
    for directory in _weight_directories(info):
        files = sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        for file in files:
            digest.update(file.name.encode())
            with file.open("rb") as handle:
                while chunk := handle.read(_READ_BYTES):
                    digest.update(chunk)
    return digest.hexdigest()


def _weight_directories(info: ModelInfo) -> list[Path]:
    """The directories holding the weights `info`'s model is made of, base first."""
    if info.kind == "bundled":
        return [bundled_model_dir(weights=True)]  # dequantized into TUNELAB_HOME first
    if info.is_adapter:
        return [*_weight_directories(resolve_model_source(info.base_model)), info.path]
    return [info.path]


def _convert(source: str, path: Path, gguf_type: str) -> None:
    # torch and the writer: loaded where they are used, so light commands stay light
    from tunelab.engine.gguf_export import write_gguf
    from tunelab.engine.models import load_base

    model, tokenizer, _ = load_base(source, device="cpu")
    handle, staging = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".gguf", dir=path.parent)
    os.close(handle)
    try:
        write_gguf(model, tokenizer, Path(staging), gguf_type)
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)
