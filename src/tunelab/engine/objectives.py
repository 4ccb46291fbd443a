"""What a training step minimises, per training method: the loop is the same for each.

An objective turns a micro-batch of examples into a summed loss over its units (trained
tokens for supervised training, pairs for DPO), how many units it got right (tokens whose
argmax is the target; pairs whose chosen answer the model now prefers by more than the
reference did), and sums of the method's own metrics. The loop divides by the step's units,
so a step's loss is the mean whatever the micro-batching, as it always was for tokens.

Token accuracy flatters a supervised run: most trained tokens are easy (a classification
answer's `<category>` tags, a query's punctuation). Supervised training also counts the
examples whose every trained token is right (`answer_accuracy`: the answer reproduced whole
under teacher forcing), the figure closest to what an evaluation will find; such per-example
sums are divided by the examples, and are also reported for validation (`val_…`).

DPO (Rafailov et al. 2023, the sigmoid loss as TRL's `DPOTrainer` computes it): with
log-ratios `π = log p(chosen) − log p(rejected)` under the model being trained and `ρ` the
same under the reference (the starting model), the loss of a pair is
`−log σ(β (π − ρ))`; the implicit rewards are `β (log p − log p_ref)` of each answer. The
reference of a LoRA run is the same model with its adapter switched off (no second copy);
a full fine-tune keeps a frozen copy. A pair's reference log-probabilities never change, so
each is computed once and kept for later epochs.

Reinforcement (GRPO, Shao et al. 2024, as TRL's `GRPOTrainer` computes it): at each step the
model samples a group of G answers to every prompt (`engine.reinforcement.rollouts`), the
caller's reward scores them, and each answer's advantage is its reward against its group's,
`A = (r − mean) / (std + 1e-4)`. Every token t of an answer then costs
`−min(ρ_t A, clip(ρ_t, 1 − ε, 1 + ε) A) + β k3_t`, with `ρ_t` the ratio of the token's
probability now to when it was sampled and `k3_t = e^(ref − logp) − (ref − logp) − 1` the
estimator of the KL to the reference (non-negative, unbiased). One optimisation pass is made
per rollout (TRL's default), so the old policy is the current one (ρ = 1 and no clipping in
value), but the clipped form stands so that the gradient is PPO's. A group whose answers all
scored alike has zero advantages: it contributes only its KL term. The loss is averaged over
each answer's tokens, then over its group (GRPO's own normalisation, not the token-level
one of DAPO or Dr GRPO): the loop divides a step's loss by a count known before the step
(here its prompts), which a token-level mean would need only after every answer is sampled;
and so every prompt weighs the same, whatever its answers' lengths. A step's unit is a prompt;
its "accuracy" is the mean reward (validation: of one greedy answer per prompt).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from peft import PeftModel

from tunelab.engine.dataset import Batch, TokenizedExample, collate, collate_packed
from tunelab.engine.loss import (
    exact_answers,
    scored_tokens,
    sequence_logprobs,
    trained_token_logprobs,
)
from tunelab.engine.preference import TokenizedPair, collate_pairs
from tunelab.engine.reinforcement import (
    Reward,
    SamplingWatch,
    TokenizedItem,
    rollout_seed,
    rollouts,
)
from tunelab.errors import TunelabError

if TYPE_CHECKING:
    from tunelab.engine.config import ResolvedConfig
    from tunelab.engine.models import CausalLM


@dataclass
class Measured:
    """A micro-batch's summed loss (with its graph), right answers and metric sums."""

    loss: torch.Tensor
    correct: float  # right answers (tokens, pairs), or the sum of rewards
    sums: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    """The method-specific part of a training step (see the module docstring)."""

    # The metric that `correct / units` is, in the step record and metrics.jsonl.
    accuracy_name: str
    # The `Measured.sums` that count examples (divided by the examples, not the units), also
    # reported for validation passes.
    per_example: tuple[str, ...]
    # Every name `measure` sums (`Measured.sums`): the ranks add them up in this order, the
    # same on each (one that only padded its step has none of them measured).
    sum_names: tuple[str, ...]

    def begin_step(self, step: int) -> None: ...

    def collate(self, examples: Sequence[Any], pad_id: int, device: torch.device) -> Batch: ...

    def units(self, examples: Sequence[Any]) -> int: ...

    def measure(self, model: CausalLM, batch: Batch, examples: Sequence[Any]) -> Measured: ...


@dataclass
class Supervised:
    """Cross-entropy over the assistant tokens."""

    packing: bool = False
    accuracy_name: str = "mean_token_accuracy"
    per_example: tuple[str, ...] = ("answer_accuracy",)
    sum_names: tuple[str, ...] = ("answer_accuracy",)

    def begin_step(self, step: int) -> None:
        """Nothing of the supervised loss depends on the step."""

    def collate(
        self, examples: Sequence[TokenizedExample], pad_id: int, device: torch.device
    ) -> Batch:
        return (collate_packed if self.packing else collate)(examples, pad_id, device)

    def units(self, examples: Sequence[TokenizedExample]) -> int:
        return sum(example.n_trained for example in examples)

    def measure(
        self, model: CausalLM, batch: Batch, examples: Sequence[TokenizedExample]
    ) -> Measured:
        loss, hits, mask = scored_tokens(model, batch)
        exact = exact_answers(hits, mask, batch)
        return Measured(loss, int(hits.sum()), {"answer_accuracy": float(exact)})


@dataclass
class DirectPreference:
    """DPO's sigmoid loss against a reference model (see the module docstring)."""

    beta: float
    # A full fine-tune's frozen starting weights; None for LoRA (the adapter switched off).
    frozen_reference: torch.nn.Module | None = None
    accuracy_name: str = "preference_accuracy"
    sum_names: tuple[str, ...] = ("reward_margin", "chosen_reward", "rejected_reward")
    per_example: tuple[str, ...] = ()  # a pair is the unit
    # id(pair) → (chosen, rejected) reference log-probabilities.
    _reference: dict[int, tuple[float, float]] = field(default_factory=dict)

    def begin_step(self, step: int) -> None:
        """Nothing of the DPO loss depends on the step."""

    def collate(
        self, examples: Sequence[TokenizedPair], pad_id: int, device: torch.device
    ) -> Batch:
        return collate_pairs(examples, pad_id, device)

    def units(self, examples: Sequence[TokenizedPair]) -> int:
        return len(examples)

    def measure(self, model: CausalLM, batch: Batch, examples: Sequence[TokenizedPair]) -> Measured:
        n = len(examples)
        logps = sequence_logprobs(model, batch)
        reference = self.reference_logprobs(model, batch, examples).to(logps.device)
        chosen_reward = self.beta * (logps[:n] - reference[:, 0])
        rejected_reward = self.beta * (logps[n:] - reference[:, 1])
        margin = chosen_reward - rejected_reward
        loss = -F.logsigmoid(margin).sum()
        margin, chosen_reward, rejected_reward = (
            t.detach() for t in (margin, chosen_reward, rejected_reward)
        )
        return Measured(
            loss,
            int((margin > 0).sum()),
            {
                "reward_margin": float(margin.sum()),
                "chosen_reward": float(chosen_reward.sum()),
                "rejected_reward": float(rejected_reward.sum()),
            },
        )

    def reference_logprobs(
        self, model: CausalLM, batch: Batch, examples: Sequence[TokenizedPair]
    ) -> torch.Tensor:
        """[pairs, 2]: each pair's chosen and rejected log-probability under the reference."""
        if any(id(pair) not in self._reference for pair in examples):
            with torch.no_grad(), reference_model(model, self.frozen_reference) as reference:
                logps = sequence_logprobs(reference, batch).float().cpu()
            n = len(examples)
            for i, pair in enumerate(examples):
                self._reference[id(pair)] = (float(logps[i]), float(logps[n + i]))
        return torch.tensor([self._reference[id(pair)] for pair in examples])


@contextlib.contextmanager
def reference_model(model: CausalLM, frozen: torch.nn.Module | None) -> Iterator[CausalLM]:
    """The starting model (`frozen`, or LoRA's base), in evaluation mode (no dropout) while
    it answers."""
    if frozen is not None:
        yield frozen  # type: ignore[misc]  # a causal LM, frozen
        return
    assert isinstance(model, PeftModel)  # LoRA: the base is the adapter switched off
    training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield model
    finally:
        model.train(training)


@dataclass(frozen=True, kw_only=True)
class RolloutBatch(Batch):
    """The rows of a micro-batch's sampled answers, G per prompt (each group's together),
    with each answer's reward and advantage."""

    group_size: int
    rewards: torch.Tensor  # [rows]
    advantages: torch.Tensor  # [rows]
    answer_tokens: torch.Tensor  # [rows]


# Added to a group's standard deviation: a group of near-equal rewards does not blow up.
ADVANTAGE_EPSILON = 1e-4


@dataclass
class GroupRelative:
    """GRPO's clipped policy loss with a KL penalty (see the module docstring).

    `policy` is the model being trained, which samples the answers; `reward` scores them;
    `watch` (the run's cancel token and progress) watches their sampling. In evaluation mode
    (validation) it answers each prompt once, greedily.
    """

    policy: CausalLM
    tokenizer: Any
    reward: Reward
    group_size: int
    temperature: float
    kl_beta: float
    clip_epsilon: float
    seed: int
    frozen_reference: torch.nn.Module | None = None
    watch: SamplingWatch | None = None
    accuracy_name: str = "reward_mean"
    per_example: tuple[str, ...] = ()  # a prompt is the unit
    sum_names: tuple[str, ...] = (
        "reward_std",
        "kl",
        "clip_fraction",
        "frac_reward_zero_std",
        "answer_tokens",
    )
    step: int = 0

    def begin_step(self, step: int) -> None:
        """The step's answers are sampled with a seed of their own (see `rollout_seed`)."""
        self.step = step

    def units(self, examples: Sequence[TokenizedItem]) -> int:
        return len(examples)

    def collate(
        self, examples: Sequence[TokenizedItem], pad_id: int, device: torch.device
    ) -> RolloutBatch:
        """Sample the answers (G each, or one greedy answer when evaluating), reward them."""
        sampling = self.policy.training
        size = self.group_size if sampling else 1
        seed = rollout_seed(self.seed, self.step, examples)
        temperature = self.temperature if sampling else 0.0
        watch = self.watch
        if watch is not None and not sampling:  # validation reports its own progress
            watch = dataclasses.replace(watch, progress=None)
        answers = rollouts(self.policy, self.tokenizer, examples, size, temperature, seed, watch)
        rewards = torch.tensor(
            [
                score
                for i, item in enumerate(examples)
                for score in self._scores(answers[i * size : (i + 1) * size], item)
            ]
        )
        grouped = rewards.view(-1, size)
        spread = grouped.std(dim=1, keepdim=True) if size > 1 else torch.zeros_like(grouped)
        advantages = (grouped - grouped.mean(dim=1, keepdim=True)) / (spread + ADVANTAGE_EPSILON)
        rows = collate([a.row for a in answers], pad_id, device)
        lengths = torch.tensor([len(a.answer.tokens) for a in answers], dtype=torch.float)
        return RolloutBatch(
            **{f.name: getattr(rows, f.name) for f in dataclasses.fields(Batch)},
            group_size=size,
            rewards=rewards.to(device),
            advantages=advantages.flatten().to(device),
            answer_tokens=lengths.to(device),
        )

    def _scores(self, answers, item: TokenizedItem) -> list[float]:
        scores = [float(s) for s in self.reward([a.answer.text for a in answers], item.record)]
        if len(scores) != len(answers) or not all(map(math.isfinite, scores)):
            raise TunelabError(
                "invalid_reward",
                f"the reward gave {scores!r} for {len(answers)} answers to the item of line "
                f"{item.item.source_line}: it must give one finite number per answer.",
            )
        return scores

    def measure(self, model: CausalLM, batch: Batch, examples: Sequence[TokenizedItem]) -> Measured:
        assert isinstance(batch, RolloutBatch)  # made by `collate`
        logps, rows = trained_token_logprobs(model, batch)
        advantages = batch.advantages[rows]
        # One pass per rollout: the policy that sampled is the one measured now.
        ratio = torch.exp(logps - logps.detach())
        low, high = 1 - self.clip_epsilon, 1 + self.clip_epsilon
        policy_loss = -torch.minimum(ratio * advantages, ratio.clamp(low, high) * advantages)
        clipped = ((ratio < low) & (advantages < 0)) | ((ratio > high) & (advantages > 0))
        kl = self._kl(model, batch, logps)
        per_answer = _answer_means(policy_loss + self.kl_beta * kl, rows, batch.answer_tokens)
        size = batch.group_size
        grouped_rewards = batch.rewards.view(-1, size)
        spread = grouped_rewards.std(dim=1) if size > 1 else torch.zeros(len(examples))

        def per_prompt(values: torch.Tensor) -> float:  # summed over prompts: the loop averages
            return float(values.detach().sum()) / size

        return Measured(
            per_answer.sum() / size,
            per_prompt(batch.rewards),
            {
                "reward_std": float(spread.sum()),
                "kl": per_prompt(_answer_means(kl, rows, batch.answer_tokens)),
                "clip_fraction": per_prompt(
                    _answer_means(clipped.float(), rows, batch.answer_tokens)
                ),
                "frac_reward_zero_std": float((spread == 0).sum()),
                "answer_tokens": per_prompt(batch.answer_tokens),
            },
        )

    def _kl(self, model: CausalLM, batch: Batch, logps: torch.Tensor) -> torch.Tensor:
        """k3, each trained token's estimate of the KL from the policy to the reference."""
        if self.kl_beta == 0:
            return torch.zeros_like(logps)
        with torch.no_grad(), reference_model(model, self.frozen_reference) as reference:
            reference_logps, _ = trained_token_logprobs(reference, batch)
        delta = reference_logps.to(logps.dtype) - logps
        return torch.exp(delta) - delta - 1


def _answer_means(values: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor):
    """The mean of per-token `values` over each answer's tokens: [answers]."""
    totals = torch.zeros(len(lengths), dtype=values.dtype, device=values.device)
    return totals.index_add(0, rows, values) / lengths.clamp(min=1).to(values.dtype)


def objective_for(
    config: ResolvedConfig,
    model: torch.nn.Module,
    tokenizer: Any = None,
    reward: Reward | None = None,
    watch: SamplingWatch | None = None,
) -> Objective:
    """The objective `config.training_method` names; call before the model is made trainable
    (a full fine-tune's reference is a frozen copy of the weights it starts from).
    Reinforcement samples with `tokenizer` (watched by `watch`) and scores with `reward`."""
    frozen = None
    if config.training_method != "supervised" and config.method == "full":
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
    if config.training_method == "dpo":
        return DirectPreference(beta=config.dpo_beta, frozen_reference=frozen)
    if config.training_method == "reinforcement":
        if reward is None:
            raise TunelabError(
                "reward_missing",
                "reinforcement training needs a reward to score the model's answers.",
                hint="give a grader: tunelab train --grader GRADER.json",
            )
        return GroupRelative(
            policy=model,  # type: ignore[arg-type]  # the trained causal LM
            tokenizer=tokenizer,
            reward=reward,
            group_size=config.rl_group_size,
            temperature=config.rl_temperature,
            kl_beta=config.rl_kl_beta,
            clip_epsilon=config.rl_clip_epsilon,
            seed=config.seed,
            frozen_reference=frozen,
            watch=watch,
        )
    return Supervised(packing=config.packing == "on")
