"""The local provider's loaded models: each loaded once, kept in an LRU cache within a memory
budget, shared by everything that answers with local weights in one process (the server, the
evaluations, `tunelab chat`).

A model loads once however many threads ask for it at the same moment: the first starts the
load and the others wait for it. Room is made before loading, from the sizes in the
safetensors headers, and again once the model is there; the least recently used models go
first.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from tunelab.engine.models import ModelInfo, load_base, resolve_model_source

MEMORY_FRACTION = 0.5  # of RAM, or of free GPU memory, for cached models by default


@dataclass(eq=False)
class LoadedModel:
    key: str  # the directory the weights came from
    model: torch.nn.Module
    tokenizer: object
    info: ModelInfo
    bytes: int
    written: float = 0.0  # when its weights were last written (`weights_written`)


class ModelCache:
    """Loaded models by directory, least recently used first; safe to use from any thread.

    Loads run one at a time (room is made for each before it starts); a request for a model
    being loaded waits for that load instead of starting another.
    """

    def __init__(self, memory_budget_bytes: int | None = None) -> None:
        self.memory_budget_bytes = memory_budget_bytes or default_memory_budget()
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._keys: dict[str, str] = {}  # the name a model was asked for → its directory
        self._lock = threading.Lock()  # guards `_models` and `_keys`
        self._loading = threading.Lock()  # one load at a time, as one loader thread did

    def directories(self) -> list[str]:
        """Directories of the cached models, least recently used first."""
        with self._lock:
            return list(self._models)

    def get(self, source: str, info: ModelInfo | None = None) -> LoadedModel:
        """The model `source` names (`info`: what `resolve_model_source` says of it), loaded
        unless it is cached already."""
        info = info or resolve_model_source(source)
        key = str(info.path)  # the directory whose weights are watched, too
        written = weights_written(key)
        with self._lock:
            self._keys[source] = key
        cached = self._cached(key, written)
        if cached is not None:
            return cached
        with self._loading:  # a concurrent request for the same model finds it cached here
            return self._cached(key, written) or self._load(key, source, info, written)

    def peek(self, source: str) -> LoadedModel | None:
        """The model `source` named when it was last asked for, if it is still cached and its
        weights unchanged; None otherwise. No name is resolved and nothing loads, so a
        server's event loop asks this before it hands a miss to a thread."""
        with self._lock:
            key = self._keys.get(source)
            loaded = self._models.get(key) if key is not None else None
        if key is None or loaded is None:
            return None
        return self._cached(key, weights_written(key))

    def drop(self, path: str) -> bool:
        """Forget the model loaded from `path`; whether it was cached."""
        with self._lock:
            return self._models.pop(str(Path(path).expanduser().resolve()), None) is not None

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def _cached(self, key: str, written: float) -> LoadedModel | None:
        """The cached model, unless its weights were written again since it loaded (a
        training run into the same directory): then it is dropped, to be loaded anew."""
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None and loaded.written != written:
                del self._models[key]
                return None
            if loaded is not None:
                self._models.move_to_end(key)
            return loaded

    def _load(self, key: str, source: str, info: ModelInfo, written: float) -> LoadedModel:
        self._make_room(estimated_bytes(info))
        model, tokenizer, loaded_info = load_base(source)
        model.eval()
        # A first use may have written the weights (the bundled model's conversion): note
        # them as they are now, or the next lookup would take them for new ones.
        written = weights_written(key)
        loaded = LoadedModel(key, model, tokenizer, loaded_info, model_bytes(model), written)
        self._make_room(loaded.bytes)
        with self._lock:
            self._models[key] = loaded  # kept even when it alone exceeds the budget
        return loaded

    def _make_room(self, incoming: int) -> None:
        """Evict least recently used models until `incoming` more bytes fit the budget."""
        with self._lock:
            while self._models and self._used() + incoming > self.memory_budget_bytes:
                self._models.popitem(last=False)

    def _used(self) -> int:
        return sum(loaded.bytes for loaded in self._models.values())


def default_memory_budget() -> int:
    """Half the free GPU memory where models load on CUDA, else half the machine's RAM."""
    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return int(free * MEMORY_FRACTION)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        total = 16 * 1024**3
    return int(total * MEMORY_FRACTION)


def model_bytes(model: torch.nn.Module) -> int:
    """Parameter bytes (buffers such as rotary tables are comparatively nothing)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def weights_written(directory: str | Path) -> float:
    """The latest modification time of the weights in a model's directory (0 when it has
    none here yet, as a Hub id not downloaded)."""
    try:
        files = [p for p in Path(directory).iterdir() if p.suffix in (".safetensors", ".bin")]
        return max((p.stat().st_mtime for p in files), default=0.0)
    except OSError:
        return 0.0


def estimated_bytes(info: ModelInfo) -> int:
    """Parameter bytes once loaded in fp32 (as `load_base` loads), read from safetensors
    headers, so that room is made before loading; 0 when the weights are not at hand yet."""
    if info.is_adapter:  # merged into its base: the base's size
        info = resolve_model_source(info.base_model)
    elements = 0
    for path in Path(info.path).glob("*.safetensors"):
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        except (OSError, ValueError):
            continue
        elements += sum(
            math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__"
        )
    return elements * 4
