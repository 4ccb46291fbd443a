"""The loss a batch reports is the loss of its examples, whatever the padding or splitting."""

from __future__ import annotations

import pytest
import torch

from tunelab.data.example import chat
from tunelab.engine import train
from tunelab.engine import trainer as trainer_module
from tunelab.engine.dataset import collate, tokenize_examples
from tunelab.engine.trainer import token_loss


def test_padded_batch_loss_equals_per_example_losses(tokenizer, make_model, examples):
    model = make_model().eval()
    varied = [*examples, chat("Tell me a long story about the capital of France and Italy.", "No.")]
    dataset = tokenize_examples(varied, tokenizer, 512)
    assert len(set(dataset.lengths)) > 3  # the batch really is padded

    with torch.no_grad():
        batch = collate(dataset.examples, tokenizer.pad_token_id, device="cpu")
        batch_loss, batch_right = token_loss(model, batch)
        singles = [
            token_loss(model, collate([e], tokenizer.pad_token_id, "cpu")) for e in dataset.examples
        ]

    n_trained = sum(e.n_trained for e in dataset.examples)
    per_example = sum(float(loss) for loss, _ in singles) / n_trained
    assert abs(float(batch_loss) / n_trained - per_example) < 1e-5
    assert int(batch_right) == sum(int(right) for _, right in singles)


def test_loss_matches_the_models_own_unpadded_loss(tokenizer, make_model):
    """token_loss (trained positions only through the head) is the usual causal-LM loss."""
    model = make_model().eval()
    [example] = tokenize_examples([chat("What do bees make?", "Honey")], tokenizer, 512).examples
    with torch.no_grad():
        ids = torch.tensor([example.input_ids])
        reference = model(input_ids=ids, labels=torch.tensor([example.labels])).loss
        loss, _ = token_loss(model, collate([example], tokenizer.pad_token_id, "cpu"))
    assert abs(float(loss) / example.n_trained - float(reference)) < 1e-5


def test_gradient_accumulation_gives_the_same_update(
    tmp_path, monkeypatch, tokenizer, make_model, examples, fast_config
):
    """Token-weighted across micro-batches: splitting a step does not change what it learns.

    Checked with plain SGD, whose update is proportional to the gradient: AdamW moves a
    parameter with a tiny gradient by about the learning rate whatever the gradient's size,
    so a last-bit difference from another summation order (thread count, a busy machine)
    could show up as a visible weight difference that says nothing about accumulation.
    """
    optimizers = []
    monkeypatch.setattr(
        trainer_module, "_optimizer", lambda *a: optimizers.append(_sgd(*a)) or optimizers[-1]
    )
    runs = []
    for accumulation in (1, 4):
        model, records = make_model(), []
        config = fast_config(
            method="full", batch_size=12, max_steps=2, gradient_accumulation_steps=accumulation
        )
        initial = [p.detach().clone() for p in model.parameters()]
        train(
            model,
            tokenizer,
            examples,
            None,
            config,
            tmp_path / f"acc{accumulation}",
            callback=records.append,
        )
        moved = [p.detach() - p0 for p, p0 in zip(model.parameters(), initial, strict=True)]
        runs.append((records, optimizers[-1].gradients, moved))
    (records_one, grads_one, moved_one), (records_four, grads_four, moved_four) = runs
    for one, four in zip(records_one, records_four, strict=True):
        assert abs(one["loss"] - four["loss"]) < 1e-5
        assert abs(one["grad_norm"] - four["grad_norm"]) < 1e-4 * one["grad_norm"]
    assert len(grads_one) == len(grads_four) == 2  # one set of gradients per optimizer step
    for step_one, step_four in zip(grads_one, grads_four, strict=True):
        assert all(_close(a, b) for a, b in zip(step_one, step_four, strict=True))
    # A move is a difference of two stored weights: each carries its own rounding.
    rounding = [
        4 * torch.finfo(p.dtype).eps * float(p.detach().abs().max()) for p in model.parameters()
    ]
    assert all(
        _close(a, b, floor) for a, b, floor in zip(moved_one, moved_four, rounding, strict=True)
    )


def _close(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> bool:
    """Equal up to float summation order: the tolerance scales with the tensors compared."""
    scale = float(torch.maximum(a.abs().max(), b.abs().max()))
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * scale + floor + 1e-12))


def _sgd(model, config) -> torch.optim.Optimizer:
    """The trainer's optimizer swapped for SGD that keeps the gradients of every step."""
    parameters = trainer_module.trainable_parameters(model)
    optimizer = torch.optim.SGD(parameters, lr=config.learning_rate)
    optimizer.gradients = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: opt.gradients.append([p.grad.clone() for p in parameters])
    )
    return optimizer


def test_packed_rows_give_the_unpacked_loss(tokenizer, make_model, examples, monkeypatch):
    """Several examples in one row, none attending to another: the same loss as padding."""
    from tunelab.engine import dataset as data_module
    from tunelab.engine.dataset import collate_packed

    monkeypatch.setattr(data_module, "PACK_ROW_TOKENS", 100)  # several rows, several per row
    model = make_model().eval()
    tokenized = tokenize_examples(examples, tokenizer, 512).examples
    with torch.no_grad():
        packed = collate_packed(tokenized, tokenizer.pad_token_id, "cpu")
        padded = collate(tokenized, tokenizer.pad_token_id, "cpu")
        packed_loss, packed_right = token_loss(model, packed)
        padded_loss, padded_right = token_loss(model, padded)
    assert 1 < packed.input_ids.shape[0] < len(tokenized)  # really packed
    assert packed.n_trained == padded.n_trained and packed.n_tokens == padded.n_tokens
    assert abs(float(packed_loss) - float(padded_loss)) / padded.n_trained < 1e-5
    assert int(packed_right) == int(padded_right)


def test_training_with_packing_follows_the_unpacked_run(tmp_path, tokenizer, make_model,
                                                         examples, fast_config):  # fmt: skip
    losses = {}
    for packing in ("off", "on"):
        records = []
        config = fast_config(method="full", batch_size=6, max_steps=3, packing=packing)
        train(make_model(), tokenizer, examples, None, config, tmp_path / packing,
              callback=records.append)  # fmt: skip
        losses[packing] = [r["loss"] for r in records]
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-4)
