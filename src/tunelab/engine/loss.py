"""The training loss: summed cross-entropy over an example's trained (assistant) tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import PeftModel

from tunelab.engine.dataset import IGNORE_INDEX, Batch
from tunelab.engine.sharding import is_sharded, masked_logits


def token_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the batch's trained tokens, and how many argmax got right.

    Only trained positions reach the output head: for small models the vocabulary projection
    is the largest matmul, and most positions (prompts, padding) carry no loss. No attention
    mask is passed: batches are right-padded, so under the causal mask every real token only
    attends to earlier real tokens, and attention keeps its fast causal kernel. Packed rows
    pass their position ids, from which transformers masks attention across examples.
    """
    mask = batch.targets != IGNORE_INDEX
    targets = batch.targets[mask]
    decoder, head = _decoder_and_head(model)
    inputs = {"input_ids": batch.input_ids, "use_cache": False}
    if batch.position_ids is not None:  # packed rows: boundaries from the position ids
        inputs["position_ids"] = batch.position_ids
    if is_sharded(model):
        logits = masked_logits(model, inputs, mask)
    elif head is not None:
        hidden = decoder(**inputs).last_hidden_state
        logits = head(hidden[mask])
    else:
        logits = model(**inputs).logits[mask]
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, (logits.detach().argmax(-1) == targets).sum()


def _decoder_and_head(model: torch.nn.Module):
    """The transformer body and output projection, or (None, None) when the model's head does
    more than a projection (logit soft-capping or scaling) and must run whole."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
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
