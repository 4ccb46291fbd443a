"""Joining two decode batches' KV caches into one, and trimming what no row attends to.

A batch's rows are left-padded: every row's tokens end at the cache's last position, and the
attention mask marks the padding. Two batches of different lengths therefore join by
left-padding the shorter one's keys, values and mask to the longer one's length and stacking
the rows (`join_caches`, `left_pad`). Positions are each row's own (they count real tokens
only), so padding changes nothing a row computes. Once rows leave a batch, the columns that
only they used are padding for every row left and are dropped (`trim_unused`), so attention
costs what the longest remaining row needs.

Only plain dynamic caches join (`joinable`): sliding-window and quantized layers keep state
beyond their keys and values.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def joinable(cache: DynamicCache) -> bool:
    """Whether every layer of `cache` is a plain dynamic layer holding keys and values."""
    return all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)


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
    for mine, theirs in zip(first.layers, second.layers, strict=True):
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
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, unused:]
        layer.values = layer.values[:, :, unused:]
    return mask[:, unused:]
