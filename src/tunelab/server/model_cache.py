"""The server's local models: each loaded once, kept in an LRU cache within a memory budget.

A model loads off the event loop (in one loader thread), once however many requests ask for
it at the same moment: the first request starts the load and the others wait for it. Room is
made before loading, from the sizes in the safetensors headers, and again once the model is
there; the least recently used models go first.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
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


class ModelCache:
    """Loaded models by directory, least recently used first; used from the event loop."""

    def __init__(self, memory_budget_bytes: int | None = None) -> None:
        self.memory_budget_bytes = memory_budget_bytes or default_memory_budget()
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, asyncio.Task] = {}
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="tunelab-load")

    def directories(self) -> list[str]:
        """Directories of the cached models, least recently used first."""
        return list(self._models)

    async def get(self, source: str, info: ModelInfo) -> LoadedModel:
        """The model `info` describes, loaded from `source` unless it is cached already."""
        key = str(info.path)
        loaded = self._models.get(key)
        if loaded is not None:
            self._models.move_to_end(key)
            return loaded
        task = self._loading.get(key)
        if task is None:  # the first request for it loads it; the others wait for that load
            task = asyncio.create_task(self._load(key, source, info))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)

    def drop(self, path: str) -> bool:
        """Forget the model loaded from `path`; whether it was cached."""
        return self._models.pop(str(Path(path).expanduser().resolve()), None) is not None

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._models.clear()

    async def _load(self, key: str, source: str, info: ModelInfo) -> LoadedModel:
        loop = asyncio.get_running_loop()
        self._make_room(await loop.run_in_executor(self._loader, estimated_bytes, info))
        model, tokenizer, info = await loop.run_in_executor(self._loader, load_base, source)
        loaded = LoadedModel(key, model, tokenizer, info, model_bytes(model))
        self._make_room(loaded.bytes)
        self._models[key] = loaded  # kept even when it alone exceeds the budget
        return loaded

    def _make_room(self, incoming: int) -> None:
        """Evict least recently used models until `incoming` more bytes fit the budget."""
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
