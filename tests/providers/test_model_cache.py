"""The local provider's model cache: one load per model, reloaded when its weights change."""

from __future__ import annotations

import os
import time

import torch

from tiny import save_tiny_model
from tunelab.providers.local import model_cache
from tunelab.providers.local.model_cache import ModelCache


def counting_loads(monkeypatch) -> list:
    loads, real = [], model_cache.load_base
    monkeypatch.setattr(model_cache, "load_base", lambda *a, **k: loads.append(a) or real(*a, **k))
    return loads


def test_a_model_loads_once_and_the_event_loop_finds_it_without_resolving(tmp_path, monkeypatch):
    directory = str(save_tiny_model(tmp_path / "m"))
    cache, loads = ModelCache(), counting_loads(monkeypatch)
    assert cache.peek(directory) is None  # never asked for: nothing to find
    first = cache.get(directory)
    assert cache.get(directory) is first and cache.peek(directory) is first
    assert len(loads) == 1


def test_weights_written_again_are_loaded_anew(tmp_path, monkeypatch):
    """A training run into the same directory: the next answer comes from the new weights."""
    directory = tmp_path / "m"
    cache, loads = ModelCache(), counting_loads(monkeypatch)
    old = cache.get(str(save_tiny_model(directory, seed=0)))
    save_tiny_model(directory, seed=1)
    later = time.time() + 5  # a file system's coarse clock must not hide the rewrite
    for weights in directory.glob("*.safetensors"):
        os.utime(weights, (later, later))
    assert cache.peek(str(directory)) is None
    new = cache.get(str(directory))
    assert len(loads) == 2 and new is not old
    old_weights = next(old.model.parameters())
    assert not torch.equal(old_weights, next(new.model.parameters()))


def test_weights_written_by_the_first_load_are_not_taken_for_new_ones(tmp_path, monkeypatch):
    """The bundled model's first use converts it, writing its weights as it loads."""
    directory = str(save_tiny_model(tmp_path / "m"))
    loads, real = [], model_cache.load_base

    def converting(source, **options):
        loads.append(source)
        later = time.time() + 5
        for weights in (tmp_path / "m").glob("*.safetensors"):
            os.utime(weights, (later, later))
        return real(source, **options)

    monkeypatch.setattr(model_cache, "load_base", converting)
    cache = ModelCache()
    first = cache.get(directory)
    assert cache.peek(directory) is first and cache.get(directory) is first
    assert len(loads) == 1
