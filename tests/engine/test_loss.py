"""The loss a batch reports is the loss of its examples, whatever the padding or splitting."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tunelab.data.example import ChatExample, chat
from tunelab.engine import train
from tunelab.engine import trainer as trainer_module
from tunelab.engine.dataset import (
    IGNORE_INDEX,
    collate,
    shared_untrained_prefix,
    tokenize_examples,
)
from tunelab.engine.loss import token_loss


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
        assert abs(one.loss - four.loss) < 1e-5
        assert abs(one.grad_norm - four.grad_norm) < 1e-4 * one.grad_norm
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


def test_training_with_packing_follows_the_unpacked_run(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    losses = {}
    for packing in ("off", "on"):
        records = []
        config = fast_config(method="full", batch_size=6, max_steps=3, packing=packing)
        train(
            make_model(),
            tokenizer,
            examples,
            None,
            config,
            tmp_path / packing,
            callback=records.append,
        )
        losses[packing] = [r.loss for r in records]
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-4)


# A classification dataset's shape: every example starts with the same system prompt and
# instruction, and differs from the text to classify on.
INSTRUCTION = "Classify the text. Answer with the category only."


def _prompted(examples):
    """The examples with a shared system prompt and instruction in front of each question."""
    system = {"role": "system", "content": "You are a helpful assistant."}
    return [
        ChatExample(
            (
                system,
                {"role": "user", "content": f"{INSTRUCTION}\n{e.messages[0]['content']}"},
                *e.messages[1:],
            ),
            source_line=e.source_line,
        )
        for e in examples
    ]


def _loss_and_gradients(model, batch):
    model.zero_grad(set_to_none=True)
    loss, right = token_loss(model, batch)
    loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    return float(loss.detach()), int(right), [p.grad.clone() for p in trained]


def test_a_shared_prefix_computed_once_gives_the_same_loss_and_gradients(
    tokenizer, make_model, examples, fast_config
):
    """The system prompt and instruction every row starts with run once for the batch; the
    loss and the LoRA gradients are those of running every row whole."""
    from tunelab.engine.lora import prepare_model

    config = fast_config(lora_rank=4).resolve(len(examples), None)
    model = prepare_model(make_model(), config)
    for parameter in model.parameters():  # LoRA's B starts at zero: give both factors a value
        if parameter.requires_grad:
            parameter.data.normal_(0, 0.5)
    tokenized = tokenize_examples(_prompted(examples), tokenizer, 512).examples
    batch = collate(tokenized, tokenizer.pad_token_id, "cpu")
    assert batch.shared_prefix >= 8  # the system prompt and instruction, in tokens

    shared = _loss_and_gradients(model, batch)
    whole = _loss_and_gradients(model, replace(batch, shared_prefix=0))
    assert shared[0] == pytest.approx(whole[0], rel=1e-5)
    assert shared[1] == whole[1]
    assert all(_close(a, b) for a, b in zip(shared[2], whole[2], strict=True))


def test_the_shared_prefix_stops_before_the_first_trained_token(tokenizer):
    """Answers that start alike ("<category>…") share trained tokens: those are not part of
    the prefix, since each row's loss needs the prediction made at its own position."""
    same_question = [
        chat("Where is Paris?", f"<category>{label}</category>", source_line=i)
        for i, label in enumerate(["LOC", "LOCATION", "PLACE"], 1)
    ]
    tokenized = tokenize_examples(_prompted(same_question), tokenizer, 512).examples
    first_trained = min(
        next(i for i, label in enumerate(e.labels) if label != IGNORE_INDEX) for e in tokenized
    )
    assert shared_untrained_prefix(tokenized) == first_trained - 1
    assert shared_untrained_prefix(tokenized[:1]) == 0  # one row: nothing to share


def test_training_with_a_shared_prefix_follows_the_unshared_run(
    tmp_path, monkeypatch, tokenizer, make_model, examples, fast_config
):
    from tunelab.engine import dataset as data_module

    losses = {}
    for name, minimum in (("shared", data_module.MIN_SHARED_PREFIX), ("whole", 10**6)):
        monkeypatch.setattr(data_module, "MIN_SHARED_PREFIX", minimum)
        records = []
        config = fast_config(batch_size=6, max_steps=3)
        train(
            make_model(),
            tokenizer,
            _prompted(examples),
            _prompted(examples[:4]),
            config,
            tmp_path / name,
            callback=records.append,
        )
        losses[name] = [
            getattr(r, key)
            for key in ("loss", "val_loss")
            for r in records
            if getattr(r, key) is not None
        ]
    assert len(losses["whole"]) > 3  # the training losses and at least one validation loss
    assert losses["shared"] == pytest.approx(losses["whole"], rel=1e-4)


def test_under_gradient_checkpointing_every_row_runs_whole(
    tokenizer, make_model, examples, fast_config
):
    """Gradient checkpointing turns the KV cache off in training: the batch's shared prefix
    is not shared then, and the loss stays that of the whole rows."""
    from tunelab.engine.lora import prepare_model

    config = fast_config(method="full", gradient_checkpointing=True)
    model = prepare_model(make_model(), config.resolve(len(examples), None)).train()
    tokenized = tokenize_examples(_prompted(examples), tokenizer, 512).examples
    batch = collate(tokenized, tokenizer.pad_token_id, "cpu")
    assert batch.shared_prefix >= 8
    shared = _loss_and_gradients(model, batch)
    whole = _loss_and_gradients(model, replace(batch, shared_prefix=0))
    assert shared[0] == pytest.approx(whole[0], rel=1e-5)


def _scores_and_gradients(model, batch):
    """The per-token losses, hits, each row's log-probability and the gradients of their sum."""
    from tunelab.engine.loss import sequence_logprobs, token_losses

    model.zero_grad(set_to_none=True)
    losses, hits, _ = token_losses(model, batch)
    losses.sum().backward()
    trained = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        rows = sequence_logprobs(model, batch)
    return losses.detach(), hits, rows, [p.grad.clone() for p in trained]


@pytest.mark.parametrize("shared", [True, False])
def test_logits_in_chunks_give_the_whole_batchs_losses_and_gradients(
    monkeypatch, tokenizer, make_model, examples, fast_config, shared
):
    """Chunks of trained positions (recomputed in backward) score as one projection does: the
    batch is padded (ignored targets between rows' trained tokens), with and without the
    prefix its rows share, and for a full fine-tune (the head itself trained)."""
    from tunelab.engine import loss as loss_module

    model = make_model()  # every weight trained: the head's gradient goes through the chunks
    tokenized = tokenize_examples(_prompted(examples), tokenizer, 512).examples
    batch = collate(tokenized, tokenizer.pad_token_id, "cpu")
    assert batch.shared_prefix > 0 and len(set(e.n_tokens for e in tokenized)) > 1
    if not shared:
        batch = replace(batch, shared_prefix=0)
    whole = _scores_and_gradients(model, batch)
    monkeypatch.setattr(loss_module, "LOGITS_CHUNK", 5)
    assert batch.n_trained > 3 * 5  # several chunks, the last one partial
    chunked = _scores_and_gradients(model, batch)
    assert torch.allclose(chunked[0], whole[0], rtol=1e-5, atol=1e-6)
    assert torch.equal(chunked[1], whole[1])
    assert torch.allclose(chunked[2], whole[2], rtol=1e-5, atol=1e-5)
    assert all(_close(a, b) for a, b in zip(chunked[3], whole[3], strict=True))


def test_the_rows_share_one_attention_mask_and_unrepeated_keys_on_cpu(tokenizer, make_model):
    """Under PyTorch's attention on CPU the suffix pass gets one broadcast mask and keeps the
    grouped keys and values; the switch for it is the caller's again afterwards."""
    import os

    from tunelab.engine import loss as loss_module

    model = make_model()
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped
    tokenized = tokenize_examples(_prompted(EXAMPLES_FOR_MASK), tokenizer, 512).examples
    batch = collate(tokenized, tokenizer.pad_token_id, "cpu")
    assert loss_module._can_mask_once(model.get_decoder(), batch)
    mask = loss_module._suffix_mask(3, 2, torch.device("cpu"))
    assert mask.shape == (1, 1, 3, 5)
    assert mask[0, 0].tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]
    before = os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA")
    loss_module.token_losses(model, batch)
    assert os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA") == before


EXAMPLES_FOR_MASK = [chat("What is two plus two?", "Four"), chat("What do bees make?", "Honey")]
