"""Training data for the engine: chat JSONL → token ids with assistant-only labels → batches.

Labels come from the model's own chat template, for any template, with or without
`{% generation %}` markers: the conversation is rendered whole, and the character span of each
trained assistant message is found by rendering the conversation up to that message
(`messages[:i]` with the generation prompt: where the answer starts) and through it
(`messages[:i + 1]`: where its end-of-turn token ends). When a template renders a turn
differently once later turns follow (Qwen3 adds an empty `<think>` block to the last answer
only), those renders are not prefixes of the whole; the span is then found by diffing two
renders of the whole conversation in which that answer's content is replaced by two different
placeholders: the text they share before and after is the template's, the rest is the answer.
Conversations with tools, tool calls or tool results are rendered by
`data.tool_text.render_chat`, the render the model is later asked with: the template's own tool
format, or tunelab's default (tools in the system prompt, calls as `<tool_call>` blocks in the
answer, which are trained like its text; results as user turns, which are not).
Templates that drop or rewrite an answer's content (e.g. hiding past answers) are refused with
a clear error rather than trained on misplaced labels. Tokens whose text starts inside a span
are trained; everything else (system, user, tool turns, role headers, `weight: 0` answers,
padding) is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np
import orjson
import torch

from tunelab.data.example import ROLES, ChatExample
from tunelab.data.jsonl import iter_lines, open_jsonl
from tunelab.data.tool_text import render_chat
from tunelab.engine.batching import prompt_groups
from tunelab.engine.generate import shared_prefix_length
from tunelab.errors import TunelabError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    # labels[t] is input_ids[t] where token t is trained, IGNORE_INDEX elsewhere (unshifted).
    labels: list[int]
    source_line: int | None = None
    truncated: bool = False  # cut to max_seq_len

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        # Token 0 has nothing before it to predict it from.
        return sum(label != IGNORE_INDEX for label in self.labels[1:])

    @cached_property
    def first_trained(self) -> int:
        """The position of the first trained token (the length of the prompt before it);
        computed once, as every batch the example is in asks."""
        trained = (i for i, label in enumerate(self.labels) if label != IGNORE_INDEX)
        return next(trained, len(self.labels))

    @property
    def prompt(self) -> list[int]:
        """The tokens before the first trained one."""
        return self.input_ids[: self.first_trained]

    def identity(self) -> Iterator[bytes]:
        """What the run's data fingerprint reads of this example."""
        yield np.asarray(self.input_ids, dtype=np.int64).tobytes()
        yield np.asarray(self.labels, dtype=np.int64).tobytes()


class TrainingUnit(Protocol):
    """One unit a training step batches: an example (supervised), a pair of answers (DPO) or
    an item to answer (reinforcement)."""

    @property
    def n_tokens(self) -> int: ...  # what its rows take: the unit's length for batching

    @property
    def n_trained(self) -> int: ...

    @property
    def prompt(self) -> list[int]: ...  # the tokens before the first trained one

    def identity(self) -> Iterator[bytes]: ...


Unit = TypeVar("Unit", bound=TrainingUnit)


@dataclass
class TrainingSet(Generic[Unit]):
    """Tokenized units with what the training loop asks of any data set: their lengths (for
    batching), counts, prompt groups and a fingerprint."""

    examples: list[Unit]
    n_read: int = 0
    n_truncated: int = 0
    # Units with nothing to train on (every answer has weight 0, truncation cut them, or a
    # prompt leaves no room for an answer): left out.
    n_without_trained_tokens: int = 0
    lengths: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = [unit.n_tokens for unit in self.examples]

    def stats(self) -> dict:
        return {
            "n_examples": len(self.examples),
            "n_read": self.n_read,
            "n_truncated": self.n_truncated,
            "n_without_trained_tokens": self.n_without_trained_tokens,
            "total_tokens": sum(self.lengths),
            "trained_tokens": sum(unit.n_trained for unit in self.examples),
        }

    @cached_property
    def prompt_groups(self) -> list[list[int]]:
        """The units whose prompts start alike (`--group-by-prompt on`)."""
        return prompt_groups([unit.prompt for unit in self.examples])

    def fingerprint(self) -> str:
        """Identity of the token data: a resumed run must train on the same tokens."""
        digest = hashlib.sha256()
        for unit in self.examples:
            for part in unit.identity():
                digest.update(part)
        return digest.hexdigest()[:16]


class TokenizedDataset(TrainingSet[TokenizedExample]):
    """Chat examples for supervised training."""


def read_chat_jsonl(path: str | Path) -> list[ChatExample]:
    """Chat examples from a JSONL file as `tunelab format` writes it (errors name file:line)."""
    examples = []
    with open_jsonl(path) as handle:
        for number, line in iter_lines(handle):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise _bad_line(path, number, f"not valid JSON ({err})") from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                raise _bad_line(path, number, 'no "messages" list')
            for message in messages:
                if not isinstance(message, dict) or message.get("role") not in ROLES:
                    raise _bad_line(path, number, f"a message without a valid role: {message!r}")
            extra = {k: v for k, v in record.items() if k != "messages"}
            examples.append(ChatExample(tuple(messages), source_line=number, extra=extra))
    return examples


def _bad_line(path: str | Path, number: int, problem: str) -> TunelabError:
    return TunelabError(
        "invalid_example",
        f"line is not a chat example: {problem}",
        hint="check the file with `tunelab validate`",
        path=path,
        line=number,
    )


def tokenize_examples(
    examples: Sequence[ChatExample],
    tokenizer,
    max_seq_len: int,
    path: str | Path | None = None,
    *,
    keep_untrained: bool = False,
) -> TokenizedDataset:
    """Render, tokenize and label `examples`; truncate to `max_seq_len` tokens. Examples left
    with nothing to train are dropped, unless `keep_untrained` (one row per example, in order)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TunelabError(
            "unsupported_tokenizer",
            "training needs a fast (Rust) Hugging Face tokenizer to locate assistant tokens.",
            hint="save the tokenizer with `tokenizers` support (a tokenizer.json file)",
        )
    rendered = [_render_with_spans(example, tokenizer, path) for example in examples]
    encoded = tokenizer(
        [text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True
    )
    kept, n_truncated = [], 0
    for example, (_, spans), ids, offsets in zip(
        examples, rendered, encoded["input_ids"], encoded["offset_mapping"], strict=True
    ):
        labels = [
            token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
            for token, (begin, _) in zip(ids, offsets, strict=True)
        ]
        truncated = len(ids) > max_seq_len
        if truncated:
            n_truncated += 1
            ids, labels = ids[:max_seq_len], labels[:max_seq_len]
        kept.append(TokenizedExample(list(ids), labels, example.source_line, truncated))
    trainable = kept if keep_untrained else [e for e in kept if e.n_trained > 0]
    return TokenizedDataset(
        trainable,
        n_read=len(examples),
        n_truncated=n_truncated,
        n_without_trained_tokens=len(kept) - len(trainable),
    )


def _render_with_spans(
    example: ChatExample, tokenizer, path: str | Path | None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its trained answers."""
    messages = [{k: v for k, v in m.items() if k != "weight"} for m in example.messages]
    tools = example.extra.get("tools")

    def render(conversation: list[dict], prompt: bool = False) -> str:
        try:
            return render_chat(tokenizer, conversation, tools, add_generation_prompt=prompt)
        except Exception as err:  # jinja2 errors, or templates that raise on purpose
            raise TunelabError(
                "chat_template_error",
                f"the model's chat template cannot render this example: {err}",
                hint="check the example's roles and contents with `tunelab validate`",
                path=path,
                line=example.source_line,
            ) from None

    full = render(messages)
    spans = []
    for i, message in enumerate(example.messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        span = _span_by_prefixes(full, messages, i, render) or _span_by_placeholders(
            full, messages, i, render
        )
        if span is None:
            raise TunelabError(
                "chat_template_not_prefix_stable",
                "the model's chat template renders earlier turns differently once later turns "
                "follow, so the assistant tokens cannot be located.",
                hint="train on single-answer examples, or use a model whose template renders "
                "each turn's content as given",
                path=path,
                line=example.source_line,
            )
        spans.append(span)
    return full, spans


def _span_by_prefixes(full: str, messages: list[dict], i: int, render) -> tuple[int, int] | None:
    """Answer i's span when the renders up to and through it are prefixes of the whole."""
    start = _answer_start(full, render(messages[:i], True), render(messages[:i]))
    through = render(messages[: i + 1])
    if start is None or not full.startswith(through):
        return None
    # The end-of-turn token is trained; the whitespace after it is template layout.
    return start, len(through.rstrip())


def _span_by_placeholders(
    full: str, messages: list[dict], i: int, render
) -> tuple[int, int] | None:
    """Answer i's span found by diffing renders with its content replaced by placeholders.

    The answer's end-of-turn marker is what the template writes after the answer when it is
    the last message (e.g. `<|im_end|>`); it is trained when the whole conversation has it too.
    """
    renders = []
    for placeholder in _PLACEHOLDERS:
        replaced = [
            *messages[:i],
            _placeholder_answer(messages[i], placeholder),
            *messages[i + 1 :],
        ]
        renders.append(render(replaced))
    first, second = renders
    before = _common_prefix(first, second)
    after = _common_prefix(first[::-1], second[::-1])
    if first[before : len(first) - after] != _PLACEHOLDERS[0]:
        return None  # the template dropped or rewrote the answer
    if not (full.startswith(first[:before]) and full.endswith(first[len(first) - after :])):
        return None
    end = len(full) - after
    alone = render([*messages[:i], _placeholder_answer(messages[i], _PLACEHOLDERS[0])])
    marker = alone[alone.rfind(_PLACEHOLDERS[0]) + len(_PLACEHOLDERS[0]) :].rstrip()
    if marker and full.startswith(marker, end):
        end += len(marker)
    return before, end


def _placeholder_answer(message: dict, placeholder: str) -> dict:
    """The answer with its content, tool calls included, given way to the placeholder."""
    kept = {key: value for key, value in message.items() if key != "tool_calls"}
    return {**kept, "content": placeholder}


# Two answers that differ in their first and last characters, so that a diff of their
# renders is exactly the answer; plain letters survive templates that trim or escape.
_PLACEHOLDERS = ("Atunelabanswerplaceholder1", "Btunelabanswerplaceholder2")


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    return next((k for k in range(n) if a[k] != b[k]), n)


def _answer_start(full: str, with_prompt: str, without_prompt: str) -> int | None:
    """Where the answer's text begins: after the generation prompt when the template has one."""
    if full.startswith(with_prompt):
        return len(with_prompt)
    # Some templates' generation prompt differs from how they render a past answer's header;
    # then the header is trained too, which is harmless.
    if full.startswith(without_prompt):
        return len(without_prompt)
    return None


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T], right-padded
    # targets[b, t] is the token to predict after input_ids[b, :t + 1], or IGNORE_INDEX.
    targets: torch.Tensor
    n_tokens: int  # real (non-padding) tokens
    n_trained: int
    # Packed rows only: positions restart at 0 with each example (see `collate_packed`).
    position_ids: torch.Tensor | None = None
    # Leading tokens that every row has and none trains on (system prompt, instruction):
    # `loss.token_loss` computes them once for the whole batch. 0: nothing shared.
    shared_prefix: int = 0


def collate(examples: Sequence[TokenizedExample], pad_id: int, device: torch.device) -> Batch:
    """Right-padded ids and next-token targets for a group of examples."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        targets[row, : n - 1] = torch.tensor(example.labels[1:])
    return Batch(
        ids.to(device),
        targets.to(device),
        n_tokens=sum(len(e.input_ids) for e in examples),
        n_trained=int((targets != IGNORE_INDEX).sum()),
        shared_prefix=shared_untrained_prefix(examples),
    )


# Below this many shared tokens a separate forward pass for them costs more than it saves.
MIN_SHARED_PREFIX = 8


def shared_untrained_prefix(examples: Sequence[TokenizedExample]) -> int:
    """How many leading tokens every example has, up to the token before the first one any
    of them trains on (no trained token's prediction may come from the shared part), and
    leaving each at least one token of its own; 0 when that is too few to be worth sharing."""
    if len(examples) < 2:
        return 0
    # Each example cut before its first trained token: the prefix leaves one of those tokens.
    length = shared_prefix_length([e.prompt for e in examples])
    return length if length >= MIN_SHARED_PREFIX else 0


# Packed rows hold examples up to this many tokens (or the longest example, if longer): on CPU
# a packed row's attention is a dense masked product, quadratic in the row's length.
PACK_ROW_TOKENS = 1024


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into rows of at most `capacity` tokens (first fit, longest first)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fit = next((r for r, left in enumerate(room) if left >= lengths[index]), None)
        if fit is None:
            rows.append([index])
            room.append(capacity - lengths[index])
        else:
            rows[fit].append(index)
            room[fit] -= lengths[index]
    return rows


def collate_packed(
    examples: Sequence[TokenizedExample], pad_id: int, device: torch.device
) -> Batch:
    """Several examples per row, none attending to another.

    Position ids restart at 0 with each example; given position ids and no attention mask,
    transformers (≥ 4.56) finds the examples' boundaries from them and builds a
    block-diagonal causal mask, so each example computes what it would alone. The last
    token of an example predicts nothing (its target would be the next example's first).
    """
    _check_packing_support()
    lengths = [len(e.input_ids) for e in examples]
    rows = pack_rows(lengths, max(PACK_ROW_TOKENS, *lengths))
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for index in row:
            example, n = examples[index], lengths[index]
            ids[r, at : at + n] = torch.tensor(example.input_ids)
            targets[r, at : at + n - 1] = torch.tensor(example.labels[1:])
            positions[r, at : at + n] = torch.arange(n)
            at += n
        # Padding continues the last example's positions: it follows it, so it changes
        # nothing before it, and it is never in the loss.
        positions[r, at:] = positions[r, at - 1] + 1 + torch.arange(width - at)
    return Batch(
        ids.to(device),
        targets.to(device),
        n_tokens=sum(lengths),
        n_trained=int((targets != IGNORE_INDEX).sum()),
        position_ids=positions.to(device),
    )


def _check_packing_support() -> None:
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        raise TunelabError(
            "packing_unsupported",
            "sequence packing needs transformers 4.56 or later (it finds the examples' "
            "boundaries from their position ids).",
            hint="upgrade transformers, or train with --packing off",
        ) from None
