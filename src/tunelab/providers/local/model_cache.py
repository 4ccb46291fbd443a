"""The local provider's loaded models: each loaded once, kept in an LRU cache within a memory
budget, shared by everything that answers with local weights in one process (the server, the
evaluations, `tunelab chat`).

A model loads once however many threads ask for it at the same moment: the first starts the
load and the others wait for it. Room is made before loading, from the sizes in the
safetensors headers, and again once the model is there; the least recently used models go
first.

Many fine-tunes of one base share one copy of it: a LoRA training output is loaded as a
peft adapter into its base's `ModelHost` (named after its directory), not merged into a copy
of the base, so twenty adapters of a 540 MB base cost the base and twenty adapters of a few
MB. Adapters count against the memory budget like models, at their own size, and are evicted
least recently used first (an adapter's use counts as its base's too, so a base goes only
after its adapters); `max_adapters` caps how many one base holds. A request that still holds
an adapter evicted meanwhile gets it loaded back when it runs (`ModelHost.adapter_names`).
Full fine-tunes, and adapters peft cannot mix in one batch (DoRA), load merged as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tunelab.engine.generate import BASE_ROW
from tunelab.engine.models import (
    ModelInfo,
    add_adapter,
    load_base,
    remove_adapter,
    resolve_model_source,
    serves_unmerged,
)

if TYPE_CHECKING:
    from tunelab.engine.models import CausalLM

MEMORY_FRACTION = 0.5  # of RAM, or of free GPU memory, for cached models by default


class ModelHost:
    """One copy of a model's weights in memory and the LoRA adapters loaded into it.

    Whatever runs the model holds `lock` for the run: adding or removing an adapter changes
    the model's layers (peft wraps a plain model on its first adapter, after which only the
    wrapper computes the base alone), so it waits for the run to finish.
    """

    def __init__(self, model: CausalLM) -> None:
        self.model = model
        self.lock = threading.RLock()
        self.adapters: dict[str, Path] = {}  # peft adapter name → the directory it came from

    def add(self, name: str, directory: Path) -> None:
        with self.lock:
            if name not in self.adapters:
                self.model = add_adapter(self.model, directory, name)
                self.adapters[name] = directory

    def remove(self, name: str) -> None:
        with self.lock:
            if self.adapters.pop(name, None) is not None:
                remove_adapter(self.model, name)

    def adapter_names(self, rows: Sequence[LoadedModel]) -> list[str] | None:
        """peft's adapter name for each row's model (`BASE_ROW` for the base), loading back
        an adapter evicted since its request was queued; None while the host has no
        adapters (its model is plain). Call it holding `lock`, for the run that follows."""
        for loaded in rows:
            if loaded.adapter is not None:
                self.add(loaded.adapter, loaded.info.path)
        if not self.adapters:
            return None
        return [loaded.adapter or BASE_ROW for loaded in rows]


@dataclass(eq=False)
class LoadedModel:
    """A model that answers: a whole model in its own host, or an adapter in its base's."""

    key: str  # the directory the weights came from
    host: ModelHost
    tokenizer: object
    info: ModelInfo
    bytes: int  # its own: a whole model's parameters, or an adapter's alone
    written: float = 0.0  # when its weights were last written (`weights_written`)
    adapter: str | None = None  # its adapter's name in the host's model (None: a whole model)
    base_key: str | None = None  # an adapter's base directory

    @property
    def model(self) -> torch.nn.Module:
        return self.host.model

    @contextlib.contextmanager
    def running(self) -> Iterator[tuple[torch.nn.Module, str | None]]:
        """The model to run and the adapter for the engine to name (None: none), its host
        held until the run is over."""
        with self.host.lock:
            names = self.host.adapter_names([self])
            yield self.host.model, None if names is None else names[0]


class ModelCache:
    """Loaded models by directory, least recently used first; safe to use from any thread.

    Loads run one at a time (room is made for each before it starts); a request for a model
    being loaded waits for that load instead of starting another.
    """

    def __init__(
        self, memory_budget_bytes: int | None = None, max_adapters: int | None = None
    ) -> None:
        self.memory_budget_bytes = memory_budget_bytes or default_memory_budget()
        self.max_adapters = max_adapters  # per base (None: as many as the memory budget holds)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._keys: dict[str, str] = {}  # the name a model was asked for → its directory
        self._lock = threading.Lock()  # guards `_models` and `_keys`
        self._loading = threading.Lock()  # one load at a time, as one loader thread did

    def directories(self) -> list[str]:
        """Directories of the cached models and adapters, least recently used first."""
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
        """Forget the model or adapter loaded from `path`; whether it was cached."""
        key = str(Path(path).expanduser().resolve())
        with self._lock:
            gone = self._forget(key)
        _unload(gone)
        return bool(gone)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def _cached(self, key: str, written: float) -> LoadedModel | None:
        """The cached model, unless its weights were written again since it loaded (a
        training run into the same directory): then it is dropped, to be loaded anew."""
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None and loaded.written != written:
                stale = self._forget(key)
                loaded = None
            elif loaded is not None:
                stale = []
                base_key = loaded.base_key
                if base_key is not None and base_key in self._models:  # goes after its adapters
                    self._models.move_to_end(base_key)
                self._models.move_to_end(key)
            else:
                stale = []
        _unload(stale)
        return loaded

    def _forget(self, key: str) -> list[LoadedModel]:
        """Drop `key` from the cache, a base with its adapters (call holding `_lock`)."""
        dropped = self._models.pop(key, None)
        if dropped is None:
            return []
        adapters = [m for m in self._models.values() if m.base_key == key]
        for adapter in adapters:
            del self._models[adapter.key]
        return [dropped, *adapters]

    def _load(self, key: str, source: str, info: ModelInfo, written: float) -> LoadedModel:
        if self._shares_base(info):
            return self._load_adapter(key, info, written)
        self._make_room(estimated_bytes(info))
        model, tokenizer, loaded_info = load_base(source)
        model.eval()
        # A first use may have written the weights (the bundled model's conversion): note
        # them as they are now, or the next lookup would take them for new ones.
        written = weights_written(key)
        host = ModelHost(model)
        loaded = LoadedModel(key, host, tokenizer, loaded_info, model_bytes(model), written)
        self._make_room(loaded.bytes)
        with self._lock:
            self._models[key] = loaded  # kept even when it alone exceeds the budget
        return loaded

    def _load_adapter(self, key: str, info: ModelInfo, written: float) -> LoadedModel:
        """A LoRA adapter loaded into its base's host (the base loaded first if need be)."""
        base_info = resolve_model_source(info.base_model)
        base_key = str(base_info.path)
        base = self._cached(base_key, weights_written(base_key))
        if base is None:
            base = self._load(base_key, info.base_model, base_info, weights_written(base_key))
        size = adapter_bytes(info.path)
        self._make_room(size, keep=base_key)
        name = adapter_name(key)
        base.host.add(name, info.path)
        loaded = LoadedModel(key, base.host, base.tokenizer, info, size, written, name, base_key)
        with self._lock:
            self._models[key] = loaded
            extra = self._adapters_over_count(base_key)
        _unload(extra)
        return loaded

    def _shares_base(self, info: ModelInfo) -> bool:
        """A LoRA adapter peft can mix, on a base that is not itself an adapter."""
        return serves_unmerged(info) and not resolve_model_source(info.base_model).is_adapter

    def _adapters_over_count(self, base_key: str) -> list[LoadedModel]:
        """The least recently used adapters of a base beyond `max_adapters`, dropped (call
        holding `_lock`)."""
        adapters = [m for m in self._models.values() if m.base_key == base_key]
        excess = len(adapters) - (self.max_adapters or len(adapters))
        return [dropped for m in adapters[: max(excess, 0)] for dropped in self._forget(m.key)]

    def _make_room(self, incoming: int, keep: str | None = None) -> None:
        """Evict least recently used models and adapters until `incoming` more bytes fit the
        budget (never `keep`, the base an adapter is about to join)."""
        evicted: list[LoadedModel] = []
        with self._lock:
            while self._used() + incoming > self.memory_budget_bytes:
                victim = next((k for k in self._models if k != keep), None)
                if victim is None:
                    break
                evicted += self._forget(victim)
        _unload(evicted)

    def _used(self) -> int:
        return sum(loaded.bytes for loaded in self._models.values())


def _unload(dropped: list[LoadedModel]) -> None:
    """Free the dropped adapters' weights in their hosts (a dropped whole model is freed
    once the last request holding it is done with it)."""
    for loaded in dropped:
        if loaded.adapter is not None:
            loaded.host.remove(loaded.adapter)


def adapter_name(directory: str) -> str:
    """The peft name of the adapter in `directory`: stable, and free of the dots peft's
    module names cannot hold."""
    return "tunelab_" + hashlib.sha256(directory.encode()).hexdigest()[:16]


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
    return _safetensors_elements(info.path) * 4


def adapter_bytes(directory: Path) -> int:
    """An adapter's parameter bytes once loaded in fp32, from its safetensors header."""
    return _safetensors_elements(directory) * 4


def _safetensors_elements(directory: Path) -> int:
    elements = 0
    for path in Path(directory).glob("*.safetensors"):
        try:
            with path.open("rb") as handle:
                header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        except (OSError, ValueError):
            continue
        elements += sum(
            math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__"
        )
    return elements
