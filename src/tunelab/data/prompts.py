"""The classification prompt: how a labelled text becomes a user message and an answer.

`tunelab format` writes training examples with it and evaluation scores model answers with
the same instance, so the two always agree on the wording and on the answer format:
`parse_answer(answer(label), labels) == label` for every label.

A user message looks like this (defaults shown):

    Classify the text into one of the categories.
    Answer with the category only, wrapped in <category></category>.

    <categories>
    ABBR
    DESC
    </categories>

    <text>
    What does NASA stand for?
    </text>

and the answer is `<category>ABBR</category>`, or `ABBR` with `bare_label=True`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_INSTRUCTION = "Classify the text into one of the categories."


@dataclass(frozen=True)
class ClassificationPrompt:
    instruction: str = DEFAULT_INSTRUCTION
    # Tag around the list of categories in the user message.
    category_tag: str = "categories"
    # Tag around the text to classify.
    item_tag: str = "text"
    # Tag around the label in the answer (unless `bare_label`).
    output_tag: str = "category"
    # Answer with the label alone, no tag.
    bare_label: bool = False

    def answer_format(self) -> str:
        """The sentence telling the model how to answer."""
        if self.bare_label:
            return "Answer with the category only."
        tag = self.output_tag
        return f"Answer with the category only, wrapped in <{tag}></{tag}>."

    def user_message(self, text: str, labels: Iterable[str]) -> str:
        # Sorted so that every example (and every evaluation prompt) lists the same order.
        categories = "\n".join(sorted(set(labels)))
        return (
            f"{self.instruction}\n{self.answer_format()}\n\n"
            f"<{self.category_tag}>\n{categories}\n</{self.category_tag}>\n\n"
            f"<{self.item_tag}>\n{text}\n</{self.item_tag}>"
        )

    def answer(self, label: str) -> str:
        if self.bare_label:
            return label
        return f"<{self.output_tag}>{label}</{self.output_tag}>"

    def parse_answer(self, model_output: str, labels: Iterable[str]) -> str | None:
        """The label a model answered, or None when the answer is not one of `labels`.

        Strict about the label itself, forgiving of the wrapping: surrounding whitespace,
        the output tag (present or missing, whatever `bare_label` says) and letter case
        when only one label matches without it. Anything else ("ABBR." or "I think ABBR")
        is not an answer.
        """
        known = list(labels)
        output = model_output.strip()
        tag = re.escape(self.output_tag)
        # Greedy, so that a label that itself contains the closing tag still round-trips.
        wrapped = re.search(rf"<{tag}>(.*)</{tag}>", output, re.DOTALL | re.IGNORECASE)
        unwrapped = wrapped.group(1).strip() if wrapped else output
        # Try the form this prompt asks for first, so that its own answers always round-trip.
        for candidate in (output, unwrapped) if self.bare_label else (unwrapped, output):
            if candidate in known:
                return candidate
        folded = [label for label in known if label.casefold() == unwrapped.casefold()]
        return folded[0] if len(folded) == 1 else None
