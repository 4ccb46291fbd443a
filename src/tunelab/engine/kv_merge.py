"""Joining two decode batches' KV caches into one, and trimming what no row attends to.

A batch's rows are left-padded: every row's tokens end at the cache's last position, and the
attention mask marks the padding. Two batches of different lengths therefore join by
left-padding the shorter one's keys, values and mask to the longer one's length and stacking
the rows (`join_caches`, `left_pad`). Positions are each row's own (they count real tokens
only), so padding changes nothing a row computes. Once rows leave a batch, the columns that
only they used are padding for every row left and are dropped (`trim_unused`), so attention
costs what the longest remaining row needs.

A decode batch's cache (`decode_cache`) keeps each layer's keys and values at the start of
buffers with room to grow (`RoomyLayer`): a decode step writes its one position into the room,
where transformers' dynamic layer concatenates, copying every row's whole cache at every
layer on every step (a cost that grows with rows × length, while the weights read per step
do not). The buffers grow by `RoomyLayer.ROOM` positions at a time, and after a join, a
departure or a trim (which give the layer new tensors) at the next step.

Only plain dynamic caches join (`joinable`): sliding-window and quantized layers keep state
beyond their keys and values.
"""

from __future__ import annotations

from typing import cast

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class RoomyLayer(DynamicLayer):
    """A dynamic layer whose keys and values are views of the first positions of buffers with
    room after them: appending writes into the room instead of copying the whole layer."""

    ROOM = 64  # positions added to the buffers each time they are (re)made

    _key_room: torch.Tensor | None = None
    _value_room: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        added = key_states.shape[-2]
        if not self._has_room(added):
            self._make_room(key_states, value_states, added)
        assert self._key_room is not None and self._value_room is not None
        length = self.get_seq_length()
        self._key_room[:, :, length : length + added] = key_states
        self._value_room[:, :, length : length + added] = value_states
        self.keys = self._key_room[:, :, : length + added]
        self.values = self._value_room[:, :, : length + added]
        return self.keys, self.values

    def _has_room(self, added: int) -> bool:
        """Whether the keys are still the buffers' first positions (no select, join or trim
        gave the layer new tensors since) with room for `added` more."""
        room, keys = self._key_room, self.keys
        return (
            room is not None
            and keys is not None
            and keys.dim() == 4
            and keys.data_ptr() == room.data_ptr()
            and keys.shape[:2] == room.shape[:2]
            and keys.stride() == room.stride()
            and keys.shape[-2] + added <= room.shape[-2]
        )

    def _make_room(self, key_states: torch.Tensor, value_states: torch.Tensor, added: int) -> None:
        """New buffers holding the current keys and values, with room for `added` and more."""
        length = self.get_seq_length()
        size = length + added + self.ROOM
        rows, heads = key_states.shape[:2]
        keys = key_states.new_empty((rows, heads, size, key_states.shape[-1]))
        values = value_states.new_empty((rows, heads, size, value_states.shape[-1]))
        if length and self.keys is not None and self.values is not None:
            keys[:, :, :length] = self.keys
            values[:, :, :length] = self.values
        self._key_room, self._value_room = keys, values
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]


def decode_cache() -> DynamicCache:
    """An empty dynamic cache whose layers are `RoomyLayer`s."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = RoomyLayer
    return cache


def joinable(cache: DynamicCache) -> bool:
    """Whether every layer of `cache` is a plain dynamic layer holding keys and values."""
    return all(
        type(layer) in (DynamicLayer, RoomyLayer) and cast(DynamicLayer, layer).is_initialized
        for layer in cache.layers
    )


def _plain_layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The layers of a `joinable` cache, as what they are."""
    return cast(list[DynamicLayer], cache.layers)


def left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """`tensor` with zeros before its entries along `dim`, up to `length` entries."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def join_caches(
    first: DynamicCache, first_mask: torch.Tensor, second: DynamicCache, second_mask: torch.Tensor
) -> torch.Tensor:
    """Append `second`'s rows to `first`'s (in place); returns the joined attention mask.

    Each mask is (rows × cached positions); the shorter side is left-padded to the longer."""
    if not (joinable(first) and joinable(second)) or len(first.layers) != len(second.layers):
        raise ValueError("only plain dynamic caches of the same model can be joined")
    length = max(first_mask.shape[-1], second_mask.shape[-1])
    for mine, theirs in zip(_plain_layers(first), _plain_layers(second), strict=True):
        assert mine.keys is not None and mine.values is not None
        assert theirs.keys is not None and theirs.values is not None
        mine.keys = torch.cat([left_pad(mine.keys, length, -2), left_pad(theirs.keys, length, -2)])
        mine.values = torch.cat(
            [left_pad(mine.values, length, -2), left_pad(theirs.values, length, -2)]
        )
    return torch.cat([left_pad(first_mask, length, -1), left_pad(second_mask, length, -1)])


def trim_unused(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading cache positions that no row attends to (in place, for plain caches);
    returns the mask without them."""
    used = mask.any(dim=0).nonzero()
    unused = int(used[0]) if len(used) else 0
    if unused == 0 or not joinable(cache):
        return mask
    for layer in _plain_layers(cache):
        assert layer.keys is not None and layer.values is not None
        layer.keys = layer.keys[:, :, unused:]
        layer.values = layer.values[:, :, unused:]
    return mask[:, unused:]
