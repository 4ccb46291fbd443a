"""Finishing a constrained answer within its token budget.

A grammar guarantees that an answer parses only if the answer ends: a model that keeps
nesting, or writes a long string, reaches its `max_tokens` in the middle of a value. So once
few tokens are left, each constrained row keeps a plan of its way out (`closing_path`): the
model's next token is written only if a plan still fits after it, and otherwise the plan's
next token is, so the answer ends where the grammar accepts it, within the budget.

The plan is made without the model, on a copy of the row's matcher: end when the grammar
accepts; else write what the grammar forces next (a property name, in whole tokens); else
write the character that closes the innermost open thing in the text so far (a
string's quote, a regex's slash, `}`, `]` or `)`), as one token with what closes next where
the tokenizer has one (`"}`); else the smallest character the grammar allows (a byte-order
choice that prefers punctuation to letters: `"` opens an empty string, `-0` a number, `,`
a required property); else the grammar's lowest allowed token. Each step closes a structure
or takes the grammar's shortest-looking way on, and the plan stops at the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import llguidance
import llguidance.torch

CLOSERS = {"{": "}", "[": "]", "(": ")"}
QUOTES = "\"'/"  # strings of either quote; a `/regex/` of the query grammar
# What a `/` opens a regex after (where a value starts); elsewhere, as in `</tool_call>`, it
# is only a character.
VALUE_STARTS = ("", ":", ",", "(", "[", "{")
RESERVE = 48  # rows start planning when this many tokens are left
LOOKAHEAD = 24  # how far a plan looks down each word it may start


def still_open(text: str) -> str:
    """The characters that close what `text` leaves open, innermost first."""
    stack: list[str] = []
    quote, escaped, before = "", False, ""
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in QUOTES and (char != "/" or before in VALUE_STARTS):
            quote = char
        elif char in CLOSERS:
            stack.append(CLOSERS[char])
        elif char in CLOSERS.values() and stack:
            stack.pop()
        if not char.isspace():
            before = char
    return quote + "".join(reversed(stack))


def _preference(char: str) -> tuple[int, str]:
    """The order the plan tries characters in: punctuation that ends or separates first,
    then digits, then what continues a name, then letters, then a space (which only pads)."""
    if char == " ":
        return 4, char
    if char.isalpha():
        return 3, char
    if char in "$_":
        return 2, char
    return (1 if char.isdigit() else 0), char


@dataclass(frozen=True)
class Alphabet:
    """A tokenizer's one-character tokens (printable ASCII, in `_preference`'s order) and
    its EOS."""

    singles: tuple[tuple[str, int], ...]
    eos: int

    @classmethod
    def of(cls, view: llguidance.LLTokenizer) -> Alphabet:
        singles = []
        for char in sorted(map(chr, range(32, 127)), key=_preference):
            tokens = view.tokenize_str(char)
            if len(tokens) == 1:
                singles.append((char, tokens[0]))
        return cls(tuple(singles), view.eos_token)


def _allowed(matcher: llguidance.LLMatcher, token: int) -> bool:
    return matcher.validate_tokens([token]) == 1


def _closing_token(matcher, view, letters: Alphabet, needed: str) -> int | None:
    """The token that writes the most of `needed` (what closes, innermost first) at once."""
    for length in range(len(needed), 0, -1):
        tokens = view.tokenize_str(needed[:length])
        if len(tokens) == 1 and _allowed(matcher, tokens[0]):
            return tokens[0]
    return None


def _committed(matcher: llguidance.LLMatcher, token: int) -> int:
    """How many bytes the grammar forces after `token`."""
    after = matcher.deep_copy()
    after.consume_token(token)
    return len(after.compute_ff_bytes())


def _plan_length(matcher, view, letters: Alphabet, pair: tuple[str, int], text: str) -> int:
    """How long a plan that starts with `pair` (a letter, its token) is (shallow plans)."""
    after = matcher.deep_copy()
    after.consume_token(pair[1])
    rest = closing_path(after, view, letters, text + pair[0], LOOKAHEAD, deep=False)
    return LOOKAHEAD + 1 if rest is None else len(rest)


def _next_token(matcher, view, letters: Alphabet, text: str, deep: bool) -> int:
    """The plan's next token (see the module docstring)."""
    if matcher.is_accepting():
        return letters.eos
    forced = matcher.compute_ff_tokens()  # text only one way on: in whole tokens, not letters
    if forced and _allowed(matcher, forced[0]):
        return forced[0]
    needed = still_open(text)
    if needed and (token := _closing_token(matcher, view, letters, needed)) is not None:
        return token
    allowed = [(char, token) for char, token in letters.singles if _allowed(matcher, token)]
    if allowed and not allowed[0][0].isalpha():  # a letter may commit to a long word
        return allowed[0][1]
    if allowed and deep:  # letters only: the one whose own plan is shortest
        return min(allowed, key=lambda pair: _plan_length(matcher, view, letters, pair, text))[1]
    if allowed:  # the one that commits to the least text (`c`ount, not `a`ggregate)
        return min(allowed, key=lambda pair: _committed(matcher, pair[1]))[1]
    bits = llguidance.torch.allocate_token_bitmask(1, view.vocab_size)
    llguidance.torch.fill_next_token_bitmask(matcher, bits, 0)
    words = bits[0].tolist()
    return next(i * 32 + b for i, w in enumerate(words) if w for b in range(32) if w >> b & 1)


def closing_path(
    matcher: llguidance.LLMatcher,
    view: llguidance.LLTokenizer,
    letters: Alphabet,
    text: str,
    budget: int,
    deep: bool = True,
) -> list[int] | None:
    """The tokens (EOS last, unless the grammar stops by itself) that end the answer `text`
    from `matcher`'s state, or None when the plan does not end within `budget` tokens."""
    plan = matcher.deep_copy()
    path: list[int] = []
    while len(path) < budget:
        token = _next_token(plan, view, letters, text, deep)
        path.append(token)
        if token == letters.eos or not plan.consume_token(token) or plan.is_stopped():
            return path
        text += view.decode_str([token])
    return None
