"""The order of training: which examples form each optimizer step's batch, epoch by epoch.

Every epoch's batches are random and a function of (seed, epoch) only, so a resumed run
replays the batches the interrupted one would have taken (see checkpoint.Position). Two ways
of forming them:

- **Length bucketing** (the default): shuffle, then sort by length inside groups of
  MEGA_BATCH_FACTOR batches, so that each batch's rows are of similar length and little of
  each is padding.
- **Prompt grouping** (`--group-by-prompt on`): examples whose prompts start alike (the same
  database schema before each question, the same few-shot block) fill batches together, so
  that each batch has a long shared prompt, which training computes once for all its rows
  (`Batch.shared_prefix`, `loss.token_loss`). On DocSpider-style data, where a ~150-token
  schema precedes each ~20-token question, that is most of each example's tokens. The cost:
  a batch holds one database's questions instead of a random mix, which changes what each
  step learns from; so it is a choice, measured by `benchmarks/quality_docspider.py`. A
  group that does not divide into whole batches is cut into batches of nearly equal size
  (13 examples at batch size 8: 7 and 6), so an epoch may have a few more steps than
  examples / batch size (`batches_per_epoch`). Inside a group, batches are cut from its
  examples sorted by length, as length bucketing sorts its mega-batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from tunelab.engine.generate import shared_prefix_length

# Batches are formed by sorting examples by length inside shuffled groups of this many
# batches: enough to make batches nearly uniform in length, small enough to keep the order
# random (Hugging Face's length-grouped sampler uses 50).
MEGA_BATCH_FACTOR = 50
# Neighbouring prompts (in token order) are in one group when they share at least this many
# leading tokens more than every prompt shares: what all prompts share (a system prompt) is
# already computed once in any batch, and a few more tokens are not worth less random batches.
GROUP_MARGIN = 16


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    seed: int,
    epoch: int,
    groups: Sequence[Sequence[int]] | None = None,
) -> list[list[int]]:
    """One epoch's batches of example indices: random, deterministic in (seed, epoch).

    Without `groups`, length bucketing (see the module docstring): packing several examples
    into one row (`collate_packed`, `--packing on`) needs a block-diagonal attention mask,
    which on CPU forces dense attention over the whole packed row (quadratic in its length)
    and a slower masked kernel; only CUDA's flash-attention varlen kernels make it free.
    Sorting by length inside shuffled mega-batches leaves a few percent of padding, keeps
    every attention implementation on its fast causal path and keeps OpenAI's meaning of
    batch size (examples per step). With `groups` (from `prompt_groups`), each group of at
    least half a batch makes batches of its own (see `_grouped`); the examples of smaller
    groups are bucketed together. Padded positions are never fed to the output head or the loss
    (see loss.token_loss).
    """
    rng = np.random.default_rng([seed, epoch])
    sizes = np.asarray(lengths)
    if groups is None:
        batches = _bucketed(rng.permutation(len(sizes)), sizes, batch_size)
    else:
        batches = _grouped(groups, sizes, batch_size, rng)
    rng.shuffle(batches)
    # The longest batch first: if memory runs out, it does so in the first step, not hours in.
    longest = max(range(len(batches)), key=lambda i: max(sizes[batches[i]]), default=0)
    if batches:
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def _bucketed(order: np.ndarray, lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """`order` cut into batches of `batch_size` (the last one smaller), sorted by length inside
    each mega-batch."""
    sizes = [batch_size] * (len(order) // batch_size) + [len(order) % batch_size]
    return _sorted_batches(order, lengths, [size for size in sizes if size])


def _sorted_batches(order: np.ndarray, lengths: np.ndarray, sizes: list[int]) -> list[list[int]]:
    """`order` cut into batches of `sizes`, sorted by length inside each run of
    MEGA_BATCH_FACTOR batches (so that a batch's rows are of similar length)."""
    batches, begin = [], 0
    for first in range(0, len(sizes), MEGA_BATCH_FACTOR):
        mega = sizes[first : first + MEGA_BATCH_FACTOR]
        chunk = order[begin : begin + sum(mega)]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [part.tolist() for part in np.split(chunk, np.cumsum(mega)[:-1])]
        begin += sum(mega)
    return batches


def _grouped(
    groups: Sequence[Sequence[int]], lengths: np.ndarray, batch_size: int, rng
) -> list[list[int]]:
    """Each group of at least half a batch cut into batches of nearly equal size; the
    examples of smaller groups bucketed together.

    Leftovers of big groups stay in their group's batches because a batch that mixes
    prompts computes each one in full: on DocSpider, a batch of leftovers behind eight
    different schemas of up to 1,457 tokens took 60-80 s, against about 6 s for a typical
    step.
    """
    batches, pooled = [], []
    for group in groups:
        members = rng.permutation(np.asarray(group, dtype=np.int64))
        if _has_own_batches(len(members), batch_size):
            batches += _split_by_length(members, lengths, batch_size)
        else:
            pooled += members.tolist()
    return batches + _bucketed(
        rng.permutation(np.asarray(pooled, dtype=np.int64)), lengths, batch_size
    )


def _split_by_length(members: np.ndarray, lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """One group's shuffled `members` in batches of nearly equal size, sorted by length inside
    each mega-batch as `_bucketed` sorts. The rows share the group's prompt; their own tokens
    (question and answer) are padded to the batch's longest. On DocSpider, batches of a
    group's questions in random order were 40% padding after the shared schema (1,340
    computed tokens a batch on average, against 1,007 sorted). The cost: a group smaller
    than a mega-batch makes nearly the same batches every epoch (only ties of length and
    the batches' order change), which the measured runs (under one epoch) did not test."""
    sizes = [len(part) for part in np.array_split(members, -(-len(members) // batch_size))]
    return _sorted_batches(members, lengths, sizes)


def _has_own_batches(group_size: int, batch_size: int) -> bool:
    return 2 * group_size >= batch_size


def batches_per_epoch(
    n_examples: int, batch_size: int, group_sizes: Sequence[int] | None = None
) -> int:
    """How many batches `epoch_batches` makes: n_examples / batch_size rounded up, or with
    prompt groups of `group_sizes`, that many for each group with batches of its own and the
    pooled rest."""
    if group_sizes is None:
        return -(-n_examples // batch_size)
    own = [n for n in group_sizes if _has_own_batches(n, batch_size)]
    pooled = sum(group_sizes) - sum(own)
    return sum(-(-n // batch_size) for n in own) + -(-pooled // batch_size)


def prompt_groups(prompts: Sequence[list[int]]) -> list[list[int]]:
    """Example indices grouped by prompt (the tokens before each example's first trained one).

    The prompts are sorted as token sequences, which puts prompts with long common beginnings
    next to each other; the sorted list is cut wherever two neighbours share fewer than
    GROUP_MARGIN leading tokens beyond what all prompts share. Prompts that differ only after
    a shared instruction are one group each (their batches are bucketed by length as without
    grouping); prompts behind the same schema are one group.
    """
    if not prompts:
        return []
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    threshold = shared_prefix_length(list(prompts)) + GROUP_MARGIN
    groups = [[order[0]]]
    for previous, current in pairwise(order):
        if shared_prefix_length([prompts[previous], prompts[current]]) >= threshold:
            groups[-1].append(current)
        else:
            groups.append([current])
    return groups


def micro_batches(batch: list[int], lengths: Sequence[int], n_micro: int) -> list[list[int]]:
    """Split a step's batch into up to `n_micro` non-empty groups of similar length."""
    ordered = sorted(batch, key=lambda i: lengths[i], reverse=True)
    return [part.tolist() for part in np.array_split(ordered, n_micro) if len(part)]
