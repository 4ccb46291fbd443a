"""Training losses' common part: the model's logits at an example's trained (assistant) tokens,
summed into the supervised loss or into each answer's log-probability (preference training),
or kept per token (reinforcement training)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import DynamicCache
from transformers.cache_utils import CacheLayerMixin

from tunelab.engine.dataset import IGNORE_INDEX, Batch
from tunelab.engine.generate import cache_keyword
from tunelab.engine.sharding import is_sharded, masked_logits

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from tunelab.engine.models import CausalLM


def token_loss(model: CausalLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the batch's trained tokens, and how many argmax got right."""
    loss, hits, _ = scored_tokens(model, batch)
    return loss, hits.sum()


def scored_tokens(model: CausalLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the batch's trained tokens, whether each one's argmax is its
    target ([trained tokens], row-major order), and the trained positions' mask."""
    logits, targets, mask = trained_logits(model, batch)
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, logits.detach().argmax(-1) == targets, mask


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
    logits, targets, mask = trained_logits(model, batch)
    per_token = -F.cross_entropy(logits.float(), targets, reduction="none")
    # The trained positions come row by row (row-major order of the mask).
    rows = mask.nonzero()[:, 0]
    totals = torch.zeros(mask.shape[0], dtype=per_token.dtype, device=per_token.device)
    return totals.index_add(0, rows, per_token)


def trained_token_logprobs(model: CausalLM, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probability of each trained token, and the row it is in: two [trained tokens]
    tensors in row-major order (reinforcement training weighs each token of an answer)."""
    logits, targets, mask = trained_logits(model, batch)
    per_token = -F.cross_entropy(logits.float(), targets, reduction="none")
    return per_token, mask.nonzero()[:, 0]


def trained_logits(
    model: CausalLM, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits of the batch's trained positions, their targets, and the positions' mask.

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
        logits = masked_logits(model, inputs, mask)
    elif decoder is not None and head is not None and _can_share_prefix(decoder, batch):
        shared = batch.shared_prefix
        logits = head(_suffix_hidden(decoder, batch)[mask[:, shared:]])
    elif decoder is not None and head is not None:
        hidden = decoder(**inputs).last_hidden_state
        logits = head(hidden[mask])
    else:
        logits = model(**inputs).logits[mask]
    return logits, targets, mask


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
    return decoder(input_ids=suffix, use_cache=True, **{keyword: cache}).last_hidden_state
