"""Reinforcement items as the trainer sees them: tokenized prompts, and their sampled answers.

The items are the data layer's `ReinforcementItem`s (OpenAI's reinforcement format, read and
checked by `tunelab.data.reinforcement`). Each prompt is tokenized once through the model's
chat template with the generation prompt, as chat answers it. At each step the model samples
a group of answers to every prompt of the batch (`rollouts`), and each answer becomes a row
of the prompt's tokens followed by the answer's token ids exactly as sampled (never
re-tokenized text, whose tokens may differ), trained on the answer only.

The reward reaches the engine as a callable (`Reward`): the engine knows nothing of graders,
which live above it (`tunelab.evals.graders`); the caller builds one from a grader.

Sampling is most of a step's time on a CPU, so the run watches it (`SamplingWatch`): its
cancel token is checked after every generated token, and the answers finished so far are
reported as progress.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunelab.data.reinforcement import ReinforcementItem
from tunelab.engine.dataset import IGNORE_INDEX, TokenizedExample, TrainingSet
from tunelab.engine.generate import SampledAnswer, encode_chat, sample_answers
from tunelab.errors import check_cancel

# The scores of a group of answers (their texts) to one item (its record: messages and the
# fields a grader reads as {{item.NAME}}), one float per answer.
Reward = Callable[[Sequence[str], Mapping[str, Any]], list[float]]


@dataclass(frozen=True)
class TokenizedItem:
    """A prompt to answer, tokenized; `index` is its place in the data set (rollout seeds)."""

    prompt: list[int]
    item: ReinforcementItem
    index: int
    answer_budget: int  # the most tokens an answer may take within --max-seq-len

    @property
    def n_trained(self) -> int:
        return self.answer_budget

    @property
    def n_tokens(self) -> int:
        return len(self.prompt) + self.answer_budget

    def identity(self) -> Iterator[bytes]:
        """The prompt's tokens and the item's fields (the reward reads them)."""
        yield np.asarray(self.prompt, dtype=np.int64).tobytes()
        yield self.item.dedupe_key()

    @property
    def record(self) -> dict:
        """What the reward reads: the item's messages and fields."""
        return self.item.to_record()


class ItemDataset(TrainingSet[TokenizedItem]):
    """Tokenized items for reinforcement: an item's length is its prompt plus its answer
    budget (what one of its rows may take); prompts are never cut (`n_without_trained_tokens`:
    those leaving no room for an answer within --max-seq-len, left out)."""


def tokenize_items(
    items: Sequence[ReinforcementItem], tokenizer, max_seq_len: int, max_answer_tokens: int
) -> ItemDataset:
    """Each item's prompt as the model's chat template renders it, ready for its answer."""
    kept: list[TokenizedItem] = []
    for item in items:
        messages = list(item.messages)
        prompt = encode_chat(tokenizer, messages)
        budget = min(max_answer_tokens, max_seq_len - len(prompt))
        if budget >= 1:
            kept.append(TokenizedItem(prompt, item, len(kept), budget))
    return ItemDataset(kept, n_read=len(items), n_without_trained_tokens=len(items) - len(kept))


@dataclass(frozen=True)
class Rollout:
    """One sampled answer to an item, as a trainable row."""

    row: TokenizedExample
    answer: SampledAnswer


@dataclass(frozen=True)
class SamplingWatch:
    """What a training run asks of sampling while it runs: `cancel` (the run's cancel token,
    `trainer.Cancel`) is checked after every token, and once set the sampling stops with
    `tunelab.errors.Interrupted`; `progress(done, total)` hears of each answer finished."""

    cancel: Any = None
    progress: Callable[[int, int], None] | None = None

    def after_each_token(self, total: int) -> Callable[[int], None]:
        """`sample_answers`' `on_token` for a batch of `total` answers."""
        reported = -1

        def after_token(finished: int) -> None:
            nonlocal reported
            check_cancel(self.cancel)
            if self.progress is not None and finished != reported:
                reported = finished
                self.progress(finished, total)

        return after_token


def rollouts(
    model,
    tokenizer,
    items: Sequence[TokenizedItem],
    group_size: int,
    temperature: float,
    seed: int,
    watch: SamplingWatch | None = None,
) -> list[Rollout]:
    """`group_size` answers to each item (item by item, each group's rows together), sampled
    in one batch with `seed`; temperature 0 answers greedily. Each row's limit is its item's
    answer budget: the batch's longest row is the longest prompt with its budget, and no
    budget exceeds what --max-seq-len leaves after its prompt. `watch`: see `SamplingWatch`."""
    prompts = [item.prompt for item in items for _ in range(group_size)]
    budgets = [item.answer_budget for item in items for _ in range(group_size)]
    answers = sample_answers(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max(budgets),
        temperature=temperature,
        seed=seed,
        max_length=max(len(p) + b for p, b in zip(prompts, budgets, strict=True)),
        on_token=None if watch is None else watch.after_each_token(len(prompts)),
    )
    return [
        Rollout(_answer_row(prompt, answer), answer)
        for prompt, answer in zip(prompts, answers, strict=True)
    ]


def _answer_row(prompt: list[int], answer: SampledAnswer) -> TokenizedExample:
    """The prompt and the answer's tokens, only the answer trained."""
    tokens = list(answer.tokens)
    return TokenizedExample(input_ids=prompt + tokens, labels=[IGNORE_INDEX] * len(prompt) + tokens)


def rollout_seed(seed: int, step: int, items: Sequence[TokenizedItem]) -> int:
    """The sampling seed of a step's micro-batch: the run's seed, the step and the items, so
    that a resumed run samples what the uninterrupted one did, on any rank."""
    key = f"{seed}:{step}:" + ",".join(str(item.index) for item in items)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1
