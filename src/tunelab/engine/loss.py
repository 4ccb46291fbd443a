"""Training losses' common part: the model's logits at an example's trained (assistant) tokens,
summed into the supervised loss or into each answer's log-probability (preference training),
or kept per token (reinforcement training).

Only trained positions reach the output head, LOGITS_CHUNK of them at a time: a chunk's
vocabulary-wide logits (49,152 floats a position for SmolLM2) are the only ones that exist at
once, in forward and, recomputed from the chunk's hidden states, in backward. Unchunked, a
batch's log-softmax (fp32) is kept until backward, and its logits (bf16 under autocast, and
their fp32 copy) exist with it: 1 GB for 2,000 trained positions (long answers, preference
pairs, reinforcement's sampled groups).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache
from transformers.cache_utils import CacheLayerMixin

from tunelab.engine.dataset import IGNORE_INDEX, Batch
from tunelab.engine.generate import cache_keyword
from tunelab.engine.sharding import is_sharded, masked_logits

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers import PreTrainedModel

    from tunelab.engine.models import CausalLM

    # The output head, projecting trained positions' hidden states to logits; None where the
    # model computed the logits itself (they are then what is chunked).
    Projection = Callable[[torch.Tensor], torch.Tensor] | None

# Trained positions projected to logits at once (see the module docstring): 256 positions'
# fp32 logits over SmolLM2's vocabulary are 50 MB. A batch with at most this many is computed
# as one chunk, which needs no recomputation in backward.
LOGITS_CHUNK = 256


def token_loss(model: CausalLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the batch's trained tokens, and how many argmax got right."""
    loss, hits, _ = scored_tokens(model, batch)
    return loss, hits.sum()


def scored_tokens(model: CausalLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the batch's trained tokens, whether each one's argmax is its
    target ([trained tokens], row-major order), and the trained positions' mask."""
    losses, hits, mask = token_losses(model, batch)
    return losses.sum(), hits, mask


def exact_answers(hits: torch.Tensor, mask: torch.Tensor, batch: Batch) -> int:
    """How many of the batch's examples have every trained token right (`hits`, as
    `scored_tokens` gives them): answers the model would reproduce whole under teacher
    forcing. A packed row holds several examples: each starts where its positions restart."""
    if batch.position_ids is None:
        example_of = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)
    else:
        example_of = ((batch.position_ids == 0).flatten().cumsum(0) - 1).view_as(mask)
    trained_in = example_of[mask]
    n_examples = int(example_of.max()) + 1
    misses = torch.zeros(n_examples, device=hits.device).index_add(0, trained_in, (~hits).float())
    trained = torch.zeros(n_examples, device=hits.device).index_add(
        0, trained_in, torch.ones_like(hits, dtype=torch.float)
    )
    return int(((misses == 0) & (trained > 0)).sum())


def sequence_logprobs(model: CausalLM, batch: Batch) -> torch.Tensor:
    """Each row's summed log-probability of its trained tokens: [rows] (preference training
    compares whole answers, not tokens)."""
    losses, _, mask = token_losses(model, batch)
    per_token = -losses
    # The trained positions come row by row (row-major order of the mask).
    rows = mask.nonzero()[:, 0]
    totals = torch.zeros(mask.shape[0], dtype=per_token.dtype, device=per_token.device)
    return totals.index_add(0, rows, per_token)


def trained_token_logprobs(model: CausalLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of each trained token, and the row it is in: two [trained tokens]
    tensors in row-major order (reinforcement training weighs each token of an answer)."""
    losses, _, mask = token_losses(model, batch)
    return -losses, mask.nonzero()[:, 0]


def token_losses(model: CausalLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each trained token's cross-entropy (fp32) and whether its argmax is its target, both
    [trained tokens] in row-major order, and the trained positions' mask."""
    project, hidden, targets, mask = trained_hidden(model, batch)
    if len(targets) <= LOGITS_CHUNK:
        losses, hits = _chunk_losses(project, hidden, targets)
        return losses, hits, mask
    # Recomputed in backward only where there is a backward (not for the reference's or a
    # validation's scores) and a projection to recompute.
    recompute = project is not None and torch.is_grad_enabled() and hidden.requires_grad
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    for start in range(0, len(targets), LOGITS_CHUNK):
        chunk = (
            project,
            hidden[start : start + LOGITS_CHUNK],
            targets[start : start + LOGITS_CHUNK],
        )
        if recompute:
            parts.append(checkpoint(_chunk_losses, *chunk, use_reentrant=False))
        else:
            parts.append(_chunk_losses(*chunk))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), mask


def _chunk_losses(
    project: Projection, hidden: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = hidden if project is None else project(hidden)
    losses = F.cross_entropy(logits.float(), targets, reduction="none")
    return losses, logits.detach().argmax(-1) == targets


def trained_hidden(
    model: CausalLM, batch: Batch
) -> tuple[Projection, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The output head and the hidden states of the batch's trained positions (or, where the
    model must compute its logits itself, no head and those positions' logits), their
    targets, and the positions' mask.

    Only trained positions reach the output head: for small models the vocabulary projection
    is the largest matmul, and most positions (prompts, padding) carry no loss. No attention
    mask is passed: batches are right-padded, so under the causal mask every real token only
    attends to earlier real tokens, and attention keeps its fast causal kernel. Packed rows
    pass their position ids, from which transformers masks attention across examples.
    A prefix every row shares (`Batch.shared_prefix`) is computed once (see `_suffix_hidden`).
    """
    mask = batch.targets != IGNORE_INDEX
    targets = batch.targets[mask]
    decoder, head = _decoder_and_head(model)
    inputs = {"input_ids": batch.input_ids, "use_cache": False}
    if batch.position_ids is not None:  # packed rows: boundaries from the position ids
        inputs["position_ids"] = batch.position_ids
    if is_sharded(model):
        return None, masked_logits(model, inputs, mask), targets, mask
    if decoder is None or head is None:
        return None, model(**inputs).logits[mask], targets, mask
    if _can_share_prefix(decoder, batch):
        hidden = _suffix_hidden(decoder, batch)[mask[:, batch.shared_prefix :]]
    else:
        hidden = decoder(**inputs).last_hidden_state[mask]
    return head, hidden, targets, mask


def _decoder_and_head(
    model: CausalLM,
) -> tuple[PreTrainedModel, torch.nn.Module] | tuple[None, None]:
    """The transformer body and output projection, or (None, None) when the model's head does
    more than a projection (logit soft-capping or scaling) and must run whole."""
    # peft types the model it wraps as any nn.Module; the engine's are transformers models.
    base = (
        cast("PreTrainedModel", model.get_base_model()) if isinstance(model, PeftModel) else model
    )
    config = base.config
    scaled = any(
        getattr(config, name, None) not in (None, 1, 1.0)
        for name in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    )
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings()
    if scaled or decoder is None or decoder is base or head is None:
        return None, None
    return decoder, head


def _can_share_prefix(decoder: torch.nn.Module, batch: Batch) -> bool:
    """Whether the batch's shared prefix can be computed once: not in packed rows (their
    positions restart per example), nor under gradient checkpointing (which turns the KV
    cache off in training)."""
    checkpointing = getattr(decoder, "gradient_checkpointing", False)
    return batch.shared_prefix > 0 and batch.position_ids is None and not checkpointing


def _suffix_hidden(decoder: PreTrainedModel, batch: Batch) -> torch.Tensor:
    """The last hidden states of every row's tokens after the shared prefix.

    The prefix runs once, as one row, keeping its keys and values; they are expanded (a view,
    no copy) to every row, and the rows' own tokens attend to them. Attention is causal, so
    the prefix computes what it would in each row, and in backward its gradient is the sum
    over the rows: the same loss and gradients as the whole batch, for the prefix's tokens
    once instead of once per row. With LoRA dropout the rows share the prefix's dropout mask.
    """
    shared, rows = batch.shared_prefix, batch.input_ids.shape[0]
    cache = DynamicCache(config=decoder.config)
    keyword = cache_keyword(decoder)
    decoder(input_ids=batch.input_ids[:1, :shared], use_cache=True, **{keyword: cache})
    for layer in cache.layers:
        # Attention layers that the prefix's pass filled (a linear-attention layer holds no
        # keys and values to share).
        assert isinstance(layer, CacheLayerMixin) and layer.keys is not None
        assert layer.values is not None
        layer.keys = layer.keys.expand(rows, -1, -1, -1)
        layer.values = layer.values.expand(rows, -1, -1, -1)
    suffix = batch.input_ids[:, shared:]
    if not _can_mask_once(decoder, batch):
        return decoder(input_ids=suffix, use_cache=True, **{keyword: cache}).last_hidden_state
    mask = _suffix_mask(suffix.shape[1], shared, batch.input_ids.device)
    with _grouped_query_attention_with_mask():
        hidden = decoder(input_ids=suffix, attention_mask=mask, use_cache=True, **{keyword: cache})
    return hidden.last_hidden_state


def _can_mask_once(decoder: PreTrainedModel, batch: Batch) -> bool:
    """Whether the rows' attention to the prefix and to their own tokens can be given one mask
    for every row and layer: under PyTorch's attention on CPU, whose kernel takes a grouped
    query attention's keys and values unrepeated with a mask, and with every layer attending
    to all earlier tokens (no sliding window, which a ready mask would override).

    Left to transformers, the mask has a row for each row of the batch, converted to floats in
    every layer and kept for backward, and a mask turns grouped-query attention off: each
    layer's keys and values, expanded to every row, were then repeated for every query head
    and kept. On DocSpider's longest batch (7 rows of 1,457 tokens) these were 790 MB of the
    3 GB that its forward pass kept.
    """
    config = decoder.config
    return (
        batch.input_ids.device.type == "cpu"
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and getattr(config, "sliding_window", None) is None
    )


def _suffix_mask(suffix: int, prefix: int, device: torch.device) -> torch.Tensor:
    """[1, 1, suffix, prefix + suffix]: each suffix token sees the prefix and itself and the
    suffix tokens before it; broadcast over rows and heads."""
    keys = torch.arange(prefix + suffix, device=device)
    return (keys[None, :] <= prefix + torch.arange(suffix, device=device)[:, None])[None, None]


@contextlib.contextmanager
def _grouped_query_attention_with_mask() -> Iterator[None]:
    """transformers' SDPA attention repeats grouped-query keys and values whenever a mask is
    given, as CUDA's kernels need; its switch for keeping them grouped is this variable,
    read at each call. PyTorch's CPU kernel computes the same either way (tested)."""
    previous = os.environ.get(_FORCE_GQA)
    os.environ[_FORCE_GQA] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[_FORCE_GQA]
        else:
            os.environ[_FORCE_GQA] = previous


_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"
