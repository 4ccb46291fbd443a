"""The local provider's model cache: one load per model, reloaded when its weights change;
LoRA fine-tunes of one base share one copy of it."""

from __future__ import annotations

import asyncio
import os
import time

import torch

from tiny import save_tiny_adapter, save_tiny_model
from tunelab.engine.generate import DecodeSession, Sampling, generate
from tunelab.engine.models import load_base
from tunelab.providers.local import model_cache, queue
from tunelab.providers.local.model_cache import ModelCache
from tunelab.providers.local.queue import BatchRequest


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


def adapters_of_one_base(root, count: int):
    """A tiny base and `count` LoRA outputs of it."""
    base = save_tiny_model(root / "base")
    return base, [save_tiny_adapter(root / f"ft{i}", base, seed=i + 1) for i in range(count)]


def test_several_adapters_share_one_copy_of_their_base(tmp_path, monkeypatch):
    base, fine_tunes = adapters_of_one_base(tmp_path, 3)
    cache, loads = ModelCache(), counting_loads(monkeypatch)
    loaded = [cache.get(str(directory)) for directory in fine_tunes]
    assert len(loads) == 1  # the base, once
    assert len({id(m.host) for m in loaded}) == 1 and len(loaded[0].host.adapters) == 3
    assert cache.get(str(base)).host is loaded[0].host  # the base itself answers from it too
    assert sorted(cache.directories()) == sorted(str(d) for d in [base, *fine_tunes])
    adapter_size = model_cache.adapter_bytes(fine_tunes[0])
    assert loaded[0].bytes == adapter_size < cache.get(str(base)).bytes // 10


def test_the_least_recently_used_adapter_is_evicted_past_the_budget(tmp_path):
    base, fine_tunes = adapters_of_one_base(tmp_path, 3)
    base_size = model_cache.model_bytes(ModelCache().get(str(base)).model)
    adapter_size = model_cache.adapter_bytes(fine_tunes[0])
    cache = ModelCache(memory_budget_bytes=base_size + 2 * adapter_size)
    first, second = (cache.get(str(d)) for d in fine_tunes[:2])
    cache.get(str(fine_tunes[0]))  # used again: the second is now the least recent
    cache.get(str(fine_tunes[2]))
    assert str(fine_tunes[1]) not in cache.directories()
    assert str(base) in cache.directories()  # the base stays while its adapters are used
    assert set(first.host.adapters) == {first.adapter, model_cache.adapter_name(str(fine_tunes[2]))}
    # A request still holding the evicted adapter gets it back when it runs.
    with second.running() as (_model, adapter):
        assert adapter == second.adapter and adapter in second.host.adapters


def test_max_adapters_caps_the_adapters_one_base_holds(tmp_path):
    _, fine_tunes = adapters_of_one_base(tmp_path, 3)
    cache = ModelCache(max_adapters=2)
    loaded = [cache.get(str(d)) for d in fine_tunes]
    assert str(fine_tunes[0]) not in cache.directories()
    assert set(loaded[0].host.adapters) == {loaded[1].adapter, loaded[2].adapter}


def test_adapters_of_one_base_batch_together_each_row_with_its_own(tmp_path, monkeypatch):
    """The generation queue's batches: a base's fine-tunes decode together, each row its
    answer."""
    base, fine_tunes = adapters_of_one_base(tmp_path, 2)
    cache = ModelCache()
    models = [cache.get(str(d)) for d in [*fine_tunes, base]]
    sampling = Sampling(max_new_tokens=6)
    messages = [{"role": "user", "content": "Who wrote Hamlet?"}]
    widths, real_step = [], DecodeSession.step
    monkeypatch.setattr(
        DecodeSession, "step", lambda self: widths.append(self.rows) or real_step(self)
    )

    async def answer_together() -> list[str]:
        loop, generation = asyncio.get_running_loop(), queue.GenerationQueue()
        requests = [
            BatchRequest(m, messages, sampling, 1, loop.create_future(), loop.time())
            for m in models
        ]
        for request in requests:
            generation.submit(request)
        try:
            return [(await request.done)[0].text for request in requests]
        finally:
            generation.close()

    mixed = asyncio.run(answer_together())
    assert max(widths) == 3  # one batch
    for directory, text in zip([*fine_tunes, base], mixed, strict=True):
        alone, tokenizer, _ = load_base(str(directory))  # a fine-tune merged, as before
        [answer] = generate(alone, tokenizer, [messages], max_new_tokens=6)
        assert text == answer.text
    assert len(set(mixed)) == 3  # three different models answered


def test_a_servers_adapter_cap_reaches_the_cache():
    from tunelab.providers.local.provider import LocalProvider
    from tunelab.providers.provider import ServingLimits

    provider = LocalProvider()
    provider.start_serving(ServingLimits(memory_budget_bytes=10**9, max_adapters=2))
    assert provider.model_cache.max_adapters == 2
    assert provider.model_cache.memory_budget_bytes == 10**9
