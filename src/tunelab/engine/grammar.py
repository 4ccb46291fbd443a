"""Constrained decoding: each row of a batch may follow a grammar, so its answer always
parses (a JSON object, one valid against a JSON Schema, a tool call).

A `Constraint` names the grammar (hashable: it rides in `Sampling` and batching keys). The
grammars are compiled by llguidance, chosen over xgrammar on this CPU because it has no
dependencies (xgrammar pulls triton and a TVM runtime) while its mask costs about 0.1 ms a
token, under 1% of a SmolLM2-135M decoding step; xgrammar's 0.015 ms saves nothing that shows.

`RowGrammars` holds one matcher per row of a batch: before each step it turns the rows'
allowed-token bitmasks into -inf on the logits of the tokens their grammar forbids, and after
it feeds each row its chosen token. A row whose grammar is complete may only end (its EOS).
Given each row's token budget, a row near its end writes the model's choice only while a
way out still fits after it, and otherwise follows its way out (`grammar_budget`, `settle`):
a constrained answer ends complete, not cut in the middle of a value.
Compiled grammars are cached by constraint, tokenizers' grammar views by tokenizer.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import llguidance
import llguidance.hf
import llguidance.torch
import torch

from tunelab.engine.grammar_budget import RESERVE, Alphabet, closing_path
from tunelab.errors import usage_error

if TYPE_CHECKING:  # a TypedDict of llguidance's type stubs only
    from llguidance._lib import JsonCompileOptions

# JSON as models usually write it (", " and ": "), with no freedom to pad with whitespace: a
# grammar that allows any whitespace lets a small model loop on newlines until its limit.
JSON_LAYOUT: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
ANY_JSON_OBJECT = {"type": "object"}


@dataclass(frozen=True)
class Constraint:
    """What a row's answer must be: `json_schema` (`source`: the schema as JSON text),
    `json_object` (any JSON object), or `lark` (`source`: a Lark grammar, llguidance's
    dialect, which may embed JSON Schemas with `%json`)."""

    kind: Literal["json_schema", "json_object", "lark"]
    source: str = ""

    @classmethod
    def json_schema(cls, schema: dict) -> Constraint:
        return cls("json_schema", json.dumps(schema, sort_keys=True))

    @classmethod
    def lark(cls, grammar: str) -> Constraint:
        return cls("lark", grammar)

    def grammar(self) -> str:
        """llguidance's grammar text for the constraint (refusing one it cannot compile)."""
        try:
            if self.kind == "lark":
                return llguidance.LLMatcher.grammar_from_lark(self.source)
            schema = json.loads(self.source) if self.kind == "json_schema" else ANY_JSON_OBJECT
            return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_LAYOUT)
        except (ValueError, TypeError) as err:
            raise usage_error("invalid_grammar", f"the {self.kind} cannot be used: {err}") from None


_tokenizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def grammar_tokenizer(tokenizer, vocabulary: int) -> llguidance.LLTokenizer:
    """llguidance's view of `tokenizer` (built once per tokenizer: about 0.5 s)."""
    return _grammar_view(tokenizer, vocabulary)[1]


def _grammar_view(tokenizer, vocabulary: int) -> tuple[int, llguidance.LLTokenizer, Alphabet]:
    known = _tokenizers.get(tokenizer)
    if known is None or known[0] != vocabulary:
        view = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocabulary)
        known = _tokenizers[tokenizer] = (vocabulary, view, Alphabet.of(view))
    return known


@lru_cache(maxsize=256)
def _compiled(constraint: Constraint) -> str:
    return constraint.grammar()


def check_constraint(constraint: Constraint) -> None:
    """Refuse a constraint whose grammar does not compile, before any work starts."""
    _compiled(constraint)


class RowGrammars:
    """The grammar state of each row of a batch (None: the row is free)."""

    def __init__(
        self,
        tokenizer,
        constraints: Sequence[Constraint | None],
        vocabulary: int,
        limits: Sequence[int] | None = None,
    ):
        """`limits`: each row's token budget, which a constrained row ends within."""
        self.vocabulary = vocabulary
        if any(constraints):
            _, self.view, self.letters = _grammar_view(tokenizer, vocabulary)
        self.matchers = [None if c is None else self._matcher(self.view, c) for c in constraints]
        self.limits = list(limits) if limits is not None else [None] * len(constraints)
        self.tokens: list[list[int]] = [[] for _ in constraints]
        self.plans: list[list[int]] = [[] for _ in constraints]

    @staticmethod
    def _matcher(view, constraint: Constraint) -> llguidance.LLMatcher:
        matcher = llguidance.LLMatcher(view, _compiled(constraint))
        if matcher.is_error():
            raise usage_error(
                "invalid_grammar", f"the {constraint.kind} cannot be used: {matcher.get_error()}"
            )
        return matcher

    @property
    def active(self) -> bool:
        return any(m is not None for m in self.matchers)

    def mask(self, logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """`logits` (one line per row of `rows`) with each grammar's forbidden tokens at -inf."""
        lines = [(k, m) for k, row in enumerate(rows) if (m := self.matchers[row]) is not None]
        if not lines:
            return logits
        bits = llguidance.torch.allocate_token_bitmask(len(lines), self.vocabulary)
        for line, (_, matcher) in enumerate(lines):
            llguidance.torch.fill_next_token_bitmask(matcher, bits, line)
        allowed = _unpack(bits, logits.shape[-1]).to(logits.device)
        masked = logits.clone()
        index = torch.tensor([k for k, _ in lines], device=logits.device)
        masked[index] = masked[index].masked_fill(~allowed, float("-inf"))
        return masked

    def advance(self, row: int, token: int) -> None:
        """Feed row `row` the token chosen for it (always one its mask allowed)."""
        matcher = self.matchers[row]
        if matcher is not None and not matcher.is_stopped():
            matcher.consume_token(token)
            self.tokens[row].append(token)

    def finished(self, row: int) -> bool:
        """Whether row `row`'s grammar is complete and allows nothing more."""
        matcher = self.matchers[row]
        return matcher is not None and matcher.is_stopped()

    def settle(self, rows: list[int], tokens: list[int]) -> list[int]:
        """The tokens to write for `rows`: each model's choice, unless it would leave its
        row no way to end within its budget; then the row's plan's next token."""
        return [self._settled(row, token) for row, token in zip(rows, tokens, strict=True)]

    def _settled(self, row: int, token: int) -> int:
        matcher, limit = self.matchers[row], self.limits[row]
        if matcher is None or limit is None or matcher.is_stopped():
            return token
        left = limit - len(self.tokens[row])
        if left > RESERVE:
            return token
        text = self.view.decode_str(self.tokens[row])
        if not self.plans[row]:  # entering the last stretch: a way out from here
            self.plans[row] = closing_path(matcher, self.view, self.letters, text, left) or []
        if self.plans[row][:1] == [token]:  # the model took the planned way out
            self.plans[row] = self.plans[row][1:]
            return token
        after = matcher.deep_copy()
        after.consume_token(token)
        text += self.view.decode_str([token])
        plan = closing_path(after, self.view, self.letters, text, left - 1)
        if plan is not None or not self.plans[row]:
            self.plans[row] = plan or []
            return token
        planned, self.plans[row] = self.plans[row][0], self.plans[row][1:]
        return planned


def _unpack(bits: torch.Tensor, vocabulary: int) -> torch.Tensor:
    """llguidance's packed bitmask (32 tokens an int32, lowest bit first) as booleans."""
    shifts = torch.arange(32, dtype=torch.int32)
    unpacked = (bits.unsqueeze(-1) >> shifts) & 1
    return unpacked.reshape(bits.shape[0], -1)[:, :vocabulary].bool()
