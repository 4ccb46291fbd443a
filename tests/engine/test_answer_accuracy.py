"""Answer accuracy: the share of examples whose every trained token the model predicts
(teacher forcing), beside token accuracy, per step and per validation pass."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.engine import train
from tunelab.engine.dataset import IGNORE_INDEX, Batch, TokenizedExample, tokenize_examples
from tunelab.engine.loss import exact_answers
from tunelab.engine.objectives import Supervised


def hand_batch(targets: list[list[int]], position_ids: list[list[int]] | None = None) -> Batch:
    ids = torch.zeros(len(targets), len(targets[0]), dtype=torch.long)
    tensor = torch.tensor(targets)
    positions = torch.tensor(position_ids) if position_ids is not None else None
    trained = int((tensor != IGNORE_INDEX).sum())
    return Batch(ids, tensor, n_tokens=ids.numel(), n_trained=trained, position_ids=positions)


def hits_for(batch: Batch, wrong: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every trained token right except those at the `wrong` trained-token indices."""
    mask = batch.targets != IGNORE_INDEX
    hits = torch.ones(int(mask.sum()), dtype=torch.bool)
    hits[list(wrong)] = False
    return hits, mask


I = IGNORE_INDEX  # noqa: E741  # a prompt or padding position


def test_an_answer_counts_only_when_every_trained_token_is_right():
    batch = hand_batch([[I, 5, 6, I], [I, I, 7, 8], [I, 9, I, I]])
    assert exact_answers(*hits_for(batch, set()), batch) == 3
    # trained tokens in row-major order: 5 6 | 7 8 | 9; the second row's last one is wrong
    assert exact_answers(*hits_for(batch, {3}), batch) == 2
    assert exact_answers(*hits_for(batch, {0, 1, 4}), batch) == 1


def test_packed_rows_count_each_example_of_a_row():
    # Row 0 packs two examples (positions restart at 0), row 1 holds one, then padding.
    batch = hand_batch(
        [[I, 5, I, I, 6, 7], [I, 8, 9, I, I, I]],
        position_ids=[[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]],
    )
    assert exact_answers(*hits_for(batch, set()), batch) == 3
    assert exact_answers(*hits_for(batch, {2}), batch) == 2  # the row's second example
    assert exact_answers(*hits_for(batch, {0, 3}), batch) == 1


def greedy_example(model, prompt: list[int], n: int, spoil: bool) -> TokenizedExample:
    """The prompt and the model's own greedy answer of `n` tokens, which teacher forcing
    reproduces whole; `spoil` changes its last token, so one trained token is wrong."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    if spoil:
        ids[-1] = (ids[-1] + 1) % model.config.vocab_size
    labels = [IGNORE_INDEX] * len(prompt) + ids[len(prompt) :]
    return TokenizedExample(ids, labels)


@pytest.mark.parametrize("packing", [False, True])
def test_the_supervised_objective_counts_the_answers_it_would_reproduce(
    tokenizer, make_model, examples, packing
):
    model = make_model().eval()
    prompts = [e.prompt for e in tokenize_examples(examples[:4], tokenizer, 512).examples]
    made = [greedy_example(model, p, 3, spoil=i % 2 == 1) for i, p in enumerate(prompts)]
    objective = Supervised(packing=packing)
    with torch.no_grad():
        batch = objective.collate(made, tokenizer.pad_token_id, torch.device("cpu"))
        measured = objective.measure(model, batch, made)
    assert measured.sums == {"answer_accuracy": 2.0}
    assert measured.correct == 4 * 3 - 2  # each spoilt answer has one wrong token


def test_answer_accuracy_is_recorded_per_step_and_per_validation(
    tmp_path, tokenizer, make_model, examples, fast_config
):
    run = tmp_path / "run"
    result = train(make_model(), tokenizer, examples, examples[:4], fast_config(eval_every=2), run)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= line["answer_accuracy"] <= 1 for line in lines)
    validated = [line for line in lines if "val_loss" in line]
    assert validated and all(0 <= line["val_answer_accuracy"] <= 1 for line in validated)
    assert not any("val_answer_accuracy" in line for line in lines if "val_loss" not in line)
    assert result.val_answer_accuracy == validated[-1]["val_answer_accuracy"]
    summary = json.loads((run / "tunelab_config.json").read_text())
    assert summary["result"]["val_answer_accuracy"] == result.val_answer_accuracy
