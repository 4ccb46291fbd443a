"""Reinforcement (GRPO) on a tiny model: rollouts as sampled, the loss, metrics, resume."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from tiny import QUESTIONS, Crash, crash_at_step
from tunelab.data.reinforcement import ReinforcementItem
from tunelab.engine import train
from tunelab.engine.checkpoint import complete_checkpoints
from tunelab.engine.objectives import GroupRelative, RolloutBatch
from tunelab.engine.reinforcement import rollouts, tokenize_items
from tunelab.errors import TunelabError

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

METRICS = ("reward_mean", "reward_std", "kl", "clip_fraction", "frac_reward_zero_std")


def items() -> list[ReinforcementItem]:
    return [
        ReinforcementItem(({"role": "user", "content": q},), {"reference_answer": a}, None, i + 1)
        for i, (q, a) in enumerate(QUESTIONS)
    ]


def contains(word: str):
    """A reward of 1 for each answer that contains `word`."""
    return lambda answers, item: [float(word in answer) for answer in answers]


def metric_lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def rl_config(fast_config, **changes):
    settings = dict(
        training_method="reinforcement",
        n_epochs=1,
        rl_group_size=4,
        rl_max_answer_tokens=6,
        learning_rate=3e-2,
    )
    return fast_config(**{**settings, **changes})


@pytest.fixture
def train_rl(tmp_path, tokenizer, make_model):
    """Trains by reinforcement on `items()` into `tmp_path / name`: a fresh tiny model unless
    `model` is given, the `validation` items if any, and `options` (reward, cancel, ...)."""

    def run(config, name: str, model=None, validation=None, **options):
        model = make_model() if model is None else model
        return train(model, tokenizer, items(), validation, config, tmp_path / name, **options)

    return run


def assert_same_metrics(run_dir, reference_dir) -> None:
    """The run logged the reference run's steps with its loss and metrics (to 1e-5)."""
    run, reference = metric_lines(run_dir), metric_lines(reference_dir)
    assert [line["step"] for line in run] == [line["step"] for line in reference]
    for after, before in zip(run, reference, strict=True):
        for name in ("loss", *METRICS):
            assert after[name] == pytest.approx(before[name], abs=1e-5)


def test_rollout_rows_hold_the_answers_tokens_as_sampled(tokenizer, make_model):
    model = make_model()
    dataset = tokenize_items(items()[:2], tokenizer, 256, max_answer_tokens=6)
    sampled = rollouts(model, tokenizer, dataset.examples, 3, temperature=1.0, seed=7)
    assert len(sampled) == 6
    for i, rollout in enumerate(sampled):
        prompt = dataset.examples[i // 3].prompt
        answer = list(rollout.answer.tokens)
        assert 1 <= len(answer) <= 6
        assert rollout.row.input_ids == prompt + answer
        assert rollout.row.labels == [-100] * len(prompt) + answer
        if rollout.answer.finish_reason == "stop":  # the end of turn is trained too
            assert answer[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    again = rollouts(model, tokenizer, dataset.examples, 3, temperature=1.0, seed=7)
    assert [r.answer.tokens for r in again] == [r.answer.tokens for r in sampled]


def test_items_whose_prompt_leaves_no_room_for_an_answer_are_left_out(tokenizer):
    dataset = tokenize_items(items()[:3], tokenizer, 20, max_answer_tokens=6)
    assert all(len(i.prompt) + i.answer_budget <= 20 for i in dataset.examples)
    assert dataset.stats()["n_read"] == 3
    assert len(dataset.examples) + dataset.n_without_trained_tokens == 3


def test_advantages_are_normalised_in_each_group_and_equal_groups_train_nothing(
    tokenizer, make_model
):
    model = make_model()
    dataset = tokenize_items(items()[:2], tokenizer, 256, max_answer_tokens=4)
    scores = iter([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    objective = GroupRelative(
        policy=model,
        tokenizer=tokenizer,
        reward=lambda answers, item: next(scores),
        group_size=4,
        temperature=1.0,
        kl_beta=0.0,
        clip_epsilon=0.2,
        seed=0,
    )
    batch = objective.collate(dataset.examples, tokenizer.pad_token_id, torch.device("cpu"))
    assert isinstance(batch, RolloutBatch)
    a = 0.5 / (float(torch.tensor([1.0, 0.0, 0.0, 1.0]).std()) + 1e-4)
    assert batch.advantages[:4].tolist() == pytest.approx([a, -a, -a, a])
    assert batch.advantages[4:].tolist() == [0.0] * 4
    measured = objective.measure(model, batch, dataset.examples)
    assert measured.correct == pytest.approx(0.5 + 0.5)  # each prompt's mean reward
    assert measured.sums["frac_reward_zero_std"] == 1.0  # one group of equal rewards
    assert measured.sums["clip_fraction"] == 0.0  # one pass per rollout: the ratio is 1
    # The loss is the negative advantage-weighted mean, which sums to zero in every group;
    # its gradient pushes the rewarded answers up.
    assert float(measured.loss.detach()) == pytest.approx(0.0, abs=1e-5)
    measured.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_the_kl_term_is_k3_against_the_reference(tokenizer, make_model):
    policy, reference = make_model(0), make_model(1).eval()
    dataset = tokenize_items(items()[:2], tokenizer, 256, max_answer_tokens=4)
    objective = GroupRelative(
        policy=policy,
        tokenizer=tokenizer,
        reward=lambda answers, item: [1.0] * len(answers),
        group_size=2,
        temperature=1.0,
        kl_beta=0.5,
        clip_epsilon=0.2,
        seed=0,
        frozen_reference=reference,
    )
    batch = objective.collate(dataset.examples, tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        measured = objective.measure(policy.eval(), batch, dataset.examples)
        logits_p = policy(batch.input_ids).logits.log_softmax(-1)
        logits_r = reference(batch.input_ids).logits.log_softmax(-1)
    expected = 0.0
    for row in range(batch.input_ids.shape[0]):
        positions = (batch.targets[row] != -100).nonzero()[:, 0]
        targets = batch.targets[row, positions]
        delta = logits_r[row, positions, targets] - logits_p[row, positions, targets]
        expected += float((delta.exp() - delta - 1).mean())
    # Every reward is equal: the loss is β × KL, averaged per answer then per group.
    assert measured.sums["kl"] == pytest.approx(expected / 2, rel=1e-4)
    assert float(measured.loss) == pytest.approx(0.5 * expected / 2, rel=1e-4)


def test_reinforcement_reports_its_metrics_and_validates_greedy_answers(
    tmp_path, train_rl, fast_config
):
    config = rl_config(fast_config, eval_every=2)
    result = train_rl(config, "run", validation=items()[:3], reward=contains("a"))
    assert result.status == "succeeded"
    lines = metric_lines(tmp_path / "run")
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert all(name in line for line in lines for name in METRICS)
    assert "mean_token_accuracy" not in lines[0]
    validated = [line for line in lines if "val_loss" in line]
    assert validated and all(0 <= line["val_reward_mean"] <= 1 for line in validated)
    assert validated[-1]["val_examples"] == 3


@pytest.mark.slow
def test_the_mean_reward_rises_towards_a_fixed_word(tmp_path, train_rl, fast_config):
    """A string_check grader rewarding a fixed word: the model learns to write it."""
    from tunelab.evals.graders import grade, parse_grader

    grader = parse_grader(
        {
            "type": "string_check",
            "name": "says is",
            "input": "{{ sample.output_text }}",
            "reference": "is",
            "operation": "like",
        }
    )
    config = rl_config(fast_config, n_epochs=4, rl_group_size=8, rl_max_answer_tokens=8)
    train_rl(
        config, "run", reward=lambda answers, item: [grade(grader, a, item).score for a in answers]
    )
    rewards = [line["reward_mean"] for line in metric_lines(tmp_path / "run")]
    assert len(rewards) == 12
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tmp_path, train_rl, fast_config):
    config = rl_config(fast_config, checkpoint_every=2, batch_size=3)
    reward = contains("a")
    train_rl(config, "whole", reward=reward)
    with pytest.raises(Crash):
        train_rl(config, "cut", callback=crash_at_step(3), reward=reward)
    result = train_rl(config, "cut", resume=True, reward=reward)
    assert result.resumed_from_step == 2 and result.status == "succeeded"
    assert_same_metrics(tmp_path / "cut", tmp_path / "whole")


def test_cancel_stops_after_the_current_step_with_a_checkpoint(train_rl, fast_config):
    cancel = threading.Event()
    result = train_rl(
        rl_config(fast_config, n_epochs=2),
        "run",
        cancel=cancel,
        callback=lambda record: cancel.set() if record.step == 1 else None,
        reward=contains("a"),
    )
    assert result.status == "cancelled" and result.step == 1
    assert result.last_checkpoint is not None


class ForwardCounter:
    """Counts the model's forward passes (one per generated token while sampling) and sets
    `cancel` at the `cancel_at`-th pass after `arm()`: Ctrl-C while a step samples."""

    def __init__(self, model, cancel: threading.Event, cancel_at: int) -> None:
        self.cancel, self.cancel_at = cancel, cancel_at
        self.passes, self.armed_at = 0, None
        model.model.register_forward_hook(self.count)

    def arm(self) -> None:
        self.armed_at = self.passes

    def count(self, module, inputs, output) -> None:
        self.passes += 1
        if self.armed_at is not None and self.passes - self.armed_at == self.cancel_at:
            self.cancel.set()

    @property
    def after_cancel(self) -> int:
        assert self.armed_at is not None
        return self.passes - self.armed_at - self.cancel_at


def run_records(result, run_dir) -> dict:
    """What a cancelled run leaves: its result, checkpoints, metric lines and files."""
    return {
        "status": result.status,
        "step": result.step,
        "checkpoint": result.last_checkpoint.name,
        "checkpoints": [p.name for p in complete_checkpoints(run_dir)],
        "files": sorted(p.name for p in run_dir.iterdir()),
    }


def test_a_cancel_while_sampling_stops_before_the_steps_optimisation_as_sft_cancels(
    tmp_path, tokenizer, make_model, fast_config, examples, train_rl
):
    cancel, graded = threading.Event(), []
    model = make_model()
    counter = ForwardCounter(model, cancel, cancel_at=5)
    counter.arm()  # step 1's sampling: 4 prompts x 4 answers of up to 32 tokens each

    def reward(answers, item):
        graded.append(item)
        return [1.0] * len(answers)

    config = rl_config(fast_config, rl_max_answer_tokens=32)
    result = train_rl(config, "rl", model=model, cancel=cancel, reward=reward)
    assert counter.after_cancel == 0  # not one more token, and no optimisation pass
    assert graded == []
    sft_cancel = threading.Event()
    sft_cancel.set()  # an SFT run cancelled before its first step is complete
    sft = train(
        make_model(), tokenizer, examples, None, fast_config(), tmp_path / "sft", cancel=sft_cancel
    )
    records = run_records(result, tmp_path / "rl")
    assert records == run_records(sft, tmp_path / "sft")
    assert (records["status"], records["step"]) == ("cancelled", 0)
    assert records["checkpoint"] == "step-00000000"
    assert records["files"] == ["checkpoints"]  # no metrics, no output


def test_a_cancel_between_micro_batches_drops_the_step_without_sampling_the_next(
    tmp_path, train_rl, fast_config
):
    cancel, graded = threading.Event(), []

    def cancel_when_graded(answers, item):
        graded.append(item)
        cancel.set()
        return [float("a" in answer) for answer in answers]

    config = rl_config(fast_config, gradient_accumulation_steps=2)
    result = train_rl(config, "run", cancel=cancel, reward=cancel_when_graded)
    assert len(graded) == 2  # the first micro-batch's 2 prompts; the second never sampled
    assert (result.status, result.step) == ("cancelled", 0)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_resume_after_a_cancel_while_sampling_reproduces_the_uninterrupted_run(
    tmp_path, make_model, fast_config, train_rl
):
    config = rl_config(fast_config, rl_max_answer_tokens=12)
    reward = contains("a")
    train_rl(config, "whole", reward=reward)
    cancel, model = threading.Event(), make_model()
    counter = ForwardCounter(model, cancel, cancel_at=3)
    cut = train_rl(
        config,
        "cut",
        model=model,
        cancel=cancel,
        callback=lambda record: counter.arm() if record.step == 1 else None,
        reward=reward,
    )
    assert (cut.status, cut.step, counter.after_cancel) == ("cancelled", 1, 0)
    assert cut.last_checkpoint.name == "step-00000001"
    result = train_rl(config, "cut", resume=True, reward=reward)
    assert result.resumed_from_step == 1 and result.status == "succeeded"
    assert_same_metrics(tmp_path / "cut", tmp_path / "whole")


def test_sampling_reports_the_answers_finished_of_the_step(train_rl, fast_config):
    reported: list[tuple[int, int]] = []
    train_rl(
        rl_config(fast_config, max_steps=1),
        "run",
        validation=items()[:2],
        reward=contains("a"),
        on_sampling=lambda done, total: reported.append((done, total)),
    )
    assert reported[-1] == (16, 16)  # 4 prompts x 4 answers; validation reports none
    assert {total for _, total in reported} == {16}
    done = [d for d, _ in reported]
    assert done == sorted(set(done))  # each count once, as answers finish


def test_reinforcement_without_a_reward_is_refused(train_rl, fast_config):
    with pytest.raises(TunelabError) as error:
        train_rl(rl_config(fast_config), "run")
    assert error.value.code == "reward_missing"


GRADER = {
    "type": "string_check",
    "name": "names the answer",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.reference_answer }}",
    "operation": "ilike",
}


def write_items(path):
    path.write_bytes(b"".join(item.to_json_line() for item in items()))
    return path


def test_tunelab_train_runs_reinforcement_with_a_grader_and_records_it(
    tmp_path, tokenizer, make_model, capsys
):
    from tunelab.cli import main

    base = tmp_path / "tiny-base"
    make_model().save_pretrained(base)
    tokenizer.save_pretrained(base)
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(GRADER))
    output = tmp_path / "run"
    args = ["train", "--train", str(write_items(tmp_path / "items.jsonl")), "--model", str(base)]
    flags = ["--training-method", "reinforcement", "--grader", str(grader), "--batch-size", "6"]
    small = ["--n-epochs", "1", "--rl-group-size", "2", "--rl-max-answer-tokens", "4", "--json"]
    assert main([*args, "--output", str(output), *flags, *small]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "succeeded" and result["total_steps"] == 2
    config = json.loads((output / "tunelab_config.json").read_text())
    assert config["config"]["training_method"] == "reinforcement"
    assert config["metadata"]["grader"] == GRADER
    assert all(name in metric_lines(output)[-1] for name in METRICS)


def test_tunelab_train_refuses_reinforcement_without_a_grader_or_items_it_cannot_grade(
    tmp_path, capsys
):
    from tunelab.cli import main

    data = write_items(tmp_path / "items.jsonl")
    args = ["train", "--train", str(data), "--output", str(tmp_path / "run"), "--dry-run"]
    assert main([*args, "--training-method", "reinforcement"]) != 0
    assert "grader_missing" in capsys.readouterr().err
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({**GRADER, "reference": "{{ item.label }}"}))
    flags = ["--training-method", "reinforcement", "--grader", str(grader)]
    assert main([*args, *flags]) != 0
    assert "invalid_training_data" in capsys.readouterr().err
    assert main([*args, "--grader", str(grader)]) != 0  # supervised: no grader to use
    assert "grader_unused" in capsys.readouterr().err
