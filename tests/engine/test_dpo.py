"""DPO on a tiny model: the loss as the paper defines it, the reference, metrics, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tiny import QUESTIONS, Crash, crash_at_step
from tunelab.data.preference import PreferenceExample, preference_pair
from tunelab.engine import train
from tunelab.engine.loss import sequence_logprobs
from tunelab.engine.preference import collate_pairs, tokenize_pairs

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")


def pairs() -> list[PreferenceExample]:
    """The right answer preferred over another question's answer."""
    answers = [a for _, a in QUESTIONS]
    return [
        preference_pair(
            [{"role": "user", "content": q}], a, answers[(i + 3) % len(answers)], source_line=i + 1
        )
        for i, (q, a) in enumerate(QUESTIONS)
    ]


def manual_logprob(model, ids: list[int], labels: list[int]) -> float:
    """log p of the labelled tokens, from the full logits of one unpadded row."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logps = F.log_softmax(logits, -1)
    return sum(float(logps[t - 1, ids[t]]) for t in range(1, len(ids)) if labels[t] != -100)


def metric_lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sequence_logprobs_sum_each_answers_token_logprobs(tokenizer, make_model):
    model = make_model().eval()
    dataset = tokenize_pairs(pairs()[:5], tokenizer, 512)
    batch = collate_pairs(dataset.examples, tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        got = sequence_logprobs(model, batch)
    rows = [p.chosen for p in dataset.examples] + [p.rejected for p in dataset.examples]
    expected = [manual_logprob(model, r.input_ids, r.labels) for r in rows]
    assert got.tolist() == pytest.approx(expected, abs=1e-4)


def test_only_the_final_answer_is_trained_and_both_share_the_prompt(tokenizer):
    pair = preference_pair(
        [
            {"role": "user", "content": "What is two plus two?"},
            {"role": "assistant", "content": "Four"},
            {"role": "user", "content": "What do bees make?"},
        ],
        "Honey",
        "Ice",
    )
    (tokenized,) = tokenize_pairs([pair], tokenizer, 512).examples
    for row, answer in ((tokenized.chosen, "Honey"), (tokenized.rejected, "Ice")):
        trained = [t for t, label in zip(row.input_ids, row.labels, strict=True) if label != -100]
        assert answer in tokenizer.decode(trained) and "Four" not in tokenizer.decode(trained)
    assert tokenized.chosen.prompt == tokenized.rejected.prompt


def test_dpo_starts_at_log_2_and_learns_to_prefer_the_chosen_answers(
    tmp_path, tokenizer, make_model, fast_config
):
    model = make_model()
    config = fast_config(training_method="dpo", n_epochs=8, learning_rate=2e-2, dpo_beta=0.5)
    result = train(model, tokenizer, pairs(), None, config, tmp_path / "run")

    assert result.status == "succeeded"
    lines = metric_lines(tmp_path / "run")
    # A fresh LoRA adapter changes nothing: the model is its reference, every margin is 0.
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert lines[0]["reward_margin"] == pytest.approx(0, abs=1e-5)
    assert "mean_token_accuracy" not in lines[0]
    last = lines[-1]
    assert last["loss"] < 0.3 and last["preference_accuracy"] == 1.0
    assert last["chosen_reward"] > last["rejected_reward"]
    assert last["reward_margin"] == pytest.approx(
        last["chosen_reward"] - last["rejected_reward"], abs=1e-4
    )


def test_the_dpo_loss_is_the_papers_formula_against_the_reference(
    tokenizer, make_model, fast_config
):
    """Step 1's loss with a changed policy equals −log σ(β(π − ρ)) computed by hand."""
    from tunelab.engine.config import TrainConfig
    from tunelab.engine.objectives import DirectPreference

    reference, policy = make_model(0).eval(), make_model(1).eval()
    dataset = tokenize_pairs(pairs()[:4], tokenizer, 512)
    batch = collate_pairs(dataset.examples, tokenizer.pad_token_id, torch.device("cpu"))
    objective = DirectPreference(beta=0.3, frozen_reference=reference)
    with torch.no_grad():
        measured = objective.measure(policy, batch, dataset.examples)
    expected = 0.0
    for pair in dataset.examples:
        pi = manual_logprob(policy, pair.chosen.input_ids, pair.chosen.labels) - manual_logprob(
            policy, pair.rejected.input_ids, pair.rejected.labels
        )
        rho = manual_logprob(reference, pair.chosen.input_ids, pair.chosen.labels) - manual_logprob(
            reference, pair.rejected.input_ids, pair.rejected.labels
        )
        expected += -math.log(1 / (1 + math.exp(-0.3 * (pi - rho))))
    assert float(measured.loss) == pytest.approx(expected, rel=1e-4)
    assert TrainConfig(training_method="dpo").validate() is None


def test_full_fine_tuning_dpo_keeps_a_frozen_reference(
    tmp_path, tokenizer, make_model, fast_config
):
    config = fast_config(
        training_method="dpo", method="full", n_epochs=3, learning_rate=1e-3, dpo_beta=0.5
    )
    result = train(make_model(), tokenizer, pairs(), None, config, tmp_path / "full")
    lines = metric_lines(tmp_path / "full")
    assert result.status == "succeeded"
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert lines[-1]["loss"] < lines[0]["loss"]


def test_dpo_validation_reports_pair_accuracy(tmp_path, tokenizer, make_model, fast_config):
    config = fast_config(training_method="dpo", n_epochs=2, eval_every=3)
    train(make_model(), tokenizer, pairs(), pairs()[:4], config, tmp_path / "run")
    validated = [line for line in metric_lines(tmp_path / "run") if "val_loss" in line]
    assert validated and all(0 <= line["val_preference_accuracy"] <= 1 for line in validated)
    assert validated[-1]["val_examples"] == 4


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_after_a_crash_reproduces_the_uninterrupted_dpo_run(
    tmp_path, tokenizer, make_model, fast_config, method
):
    config = fast_config(
        training_method="dpo",
        method=method,
        n_epochs=3,
        checkpoint_every=2,
        learning_rate=1e-2 if method == "lora" else 1e-3,
    )
    train(make_model(), tokenizer, pairs(), None, config, tmp_path / "whole")
    with pytest.raises(Crash):
        train(
            make_model(),
            tokenizer,
            pairs(),
            None,
            config,
            tmp_path / "cut",
            callback=crash_at_step(5),
        )
    result = train(make_model(), tokenizer, pairs(), None, config, tmp_path / "cut", resume=True)
    assert result.resumed_from_step == 4 and result.status == "succeeded"
    whole, cut = metric_lines(tmp_path / "whole"), metric_lines(tmp_path / "cut")
    assert [line["step"] for line in cut] == [line["step"] for line in whole]
    for after, before in zip(cut, whole, strict=True):
        assert after["loss"] == pytest.approx(before["loss"], abs=1e-5)
        assert after["reward_margin"] == pytest.approx(before["reward_margin"], abs=1e-5)


def test_dpo_trains_from_a_preference_file(tmp_path, tokenizer, make_model, fast_config):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"".join(pair.to_json_line() for pair in pairs()))
    config = fast_config(training_method="dpo", n_epochs=1)
    result = train(make_model(), tokenizer, path, None, config, tmp_path / "run")
    assert result.status == "succeeded"
    assert result.dataset["train"]["n_examples"] == len(QUESTIONS)


def test_tunelab_train_runs_dpo_on_a_preference_file_and_the_output_chats(
    tmp_path, tokenizer, make_model, capsys
):
    from tunelab.cli import main

    base = tmp_path / "tiny-base"
    make_model().save_pretrained(base)
    tokenizer.save_pretrained(base)
    data = tmp_path / "pairs.jsonl"
    data.write_bytes(b"".join(pair.to_json_line() for pair in pairs()))
    output = tmp_path / "run"
    args = ["train", "--train", str(data), "--model", str(base), "--output", str(output)]
    flags = ["--training-method", "dpo", "--batch-size", "4", "--n-epochs", "1", "--json"]
    assert main([*args, *flags]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "succeeded" and result["total_steps"] == 3
    config = json.loads((output / "tunelab_config.json").read_text())
    assert config["config"]["training_method"] == "dpo"
    assert "preference_accuracy" in metric_lines(output)[-1]
    assert main(["chat", str(output), "What do bees make?", "--max-tokens", "4"]) == 0


def test_tunelab_train_refuses_chat_data_for_dpo_naming_the_problem(tmp_path, capsys):
    from tiny import write_chat_jsonl
    from tunelab.cli import main

    data = write_chat_jsonl(tmp_path / "chat.jsonl")
    args = ["train", "--train", str(data), "--output", str(tmp_path / "run")]
    assert main([*args, "--training-method", "dpo", "--dry-run"]) != 0
    assert "invalid_training_data" in capsys.readouterr().err
