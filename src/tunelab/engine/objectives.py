"""What a training step minimises, per training method: the loop is the same for each.

An objective turns a micro-batch of examples into a summed loss over its units (trained
tokens for supervised training, pairs for DPO), how many units it got right (tokens whose
argmax is the target; pairs whose chosen answer the model now prefers by more than the
reference did), and sums of the method's own metrics. The loop divides by the step's units,
so a step's loss is the mean whatever the micro-batching, as it always was for tokens.

DPO (Rafailov et al. 2023, the sigmoid loss as TRL's `DPOTrainer` computes it): with
log-ratios `π = log p(chosen) − log p(rejected)` under the model being trained and `ρ` the
same under the reference (the starting model), the loss of a pair is
`−log σ(β (π − ρ))`; the implicit rewards are `β (log p − log p_ref)` of each answer. The
reference of a LoRA run is the same model with its adapter switched off (no second copy);
a full fine-tune keeps a frozen copy. A pair's reference log-probabilities never change, so
each is computed once and kept for later epochs.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from peft import PeftModel

from tunelab.engine.dataset import Batch, TokenizedExample, collate, collate_packed
from tunelab.engine.loss import sequence_logprobs, token_loss
from tunelab.engine.preference import TokenizedPair, collate_pairs

if TYPE_CHECKING:
    from tunelab.engine.config import ResolvedConfig
    from tunelab.engine.models import CausalLM


@dataclass
class Measured:
    """A micro-batch's summed loss (with its graph), right answers and metric sums."""

    loss: torch.Tensor
    correct: int
    sums: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    """The method-specific part of a training step (see the module docstring)."""

    # The metric that `correct / units` is, in the step record and metrics.jsonl.
    accuracy_name: str

    def collate(self, examples: Sequence[Any], pad_id: int, device: torch.device) -> Batch: ...

    def units(self, examples: Sequence[Any]) -> int: ...

    def measure(self, model: CausalLM, batch: Batch, examples: Sequence[Any]) -> Measured: ...


@dataclass
class Supervised:
    """Cross-entropy over the assistant tokens."""

    packing: bool = False
    accuracy_name: str = "mean_token_accuracy"

    def collate(
        self, examples: Sequence[TokenizedExample], pad_id: int, device: torch.device
    ) -> Batch:
        return (collate_packed if self.packing else collate)(examples, pad_id, device)

    def units(self, examples: Sequence[TokenizedExample]) -> int:
        return sum(example.n_trained for example in examples)

    def measure(
        self, model: CausalLM, batch: Batch, examples: Sequence[TokenizedExample]
    ) -> Measured:
        loss, right = token_loss(model, batch)
        return Measured(loss, int(right))


@dataclass
class DirectPreference:
    """DPO's sigmoid loss against a reference model (see the module docstring)."""

    beta: float
    # A full fine-tune's frozen starting weights; None for LoRA (the adapter switched off).
    frozen_reference: torch.nn.Module | None = None
    accuracy_name: str = "preference_accuracy"
    # id(pair) → (chosen, rejected) reference log-probabilities.
    _reference: dict[int, tuple[float, float]] = field(default_factory=dict)

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
            with torch.no_grad(), self._reference_model(model) as reference:
                logps = sequence_logprobs(reference, batch).float().cpu()
            n = len(examples)
            for i, pair in enumerate(examples):
                self._reference[id(pair)] = (float(logps[i]), float(logps[n + i]))
        return torch.tensor([self._reference[id(pair)] for pair in examples])

    @contextlib.contextmanager
    def _reference_model(self, model: CausalLM) -> Iterator[CausalLM]:
        """The starting model, in evaluation mode (no dropout) while it answers."""
        if self.frozen_reference is not None:
            yield self.frozen_reference  # type: ignore[misc]  # a causal LM, frozen
            return
        assert isinstance(model, PeftModel)  # LoRA: the base is the adapter switched off
        training = model.training
        model.eval()
        try:
            with model.disable_adapter():
                yield model
        finally:
            model.train(training)


def objective_for(config: ResolvedConfig, model: torch.nn.Module) -> Objective:
    """The objective `config.training_method` names; call before the model is made trainable
    (a full fine-tune's reference is a frozen copy of the weights it starts from)."""
    if config.training_method == "dpo":
        frozen = None
        if config.method == "full":
            frozen = copy.deepcopy(model).eval().requires_grad_(False)
        return DirectPreference(beta=config.dpo_beta, frozen_reference=frozen)
    return Supervised(packing=config.packing == "on")
