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

The short template (`template="short"`) leaves the list of categories out: a long list is
most of each prompt's tokens, computed (and billed) for every example though never learned
from. Its instruction names the task only ("Classify the text." unless given), and whoever
scores the answers needs the label set from elsewhere: `tunelab format` writes it beside each
output (`label_set_path`), where `tunelab eval classify` finds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from tunelab.errors import TunelabError, usage_error

DEFAULT_INSTRUCTION = "Classify the text into one of the categories."
SHORT_INSTRUCTION = "Classify the text."
# "full": the user message lists the categories; "short": it does not.
TEMPLATES = ("full", "short")


@dataclass(frozen=True)
class ClassificationPrompt:
    # None: DEFAULT_INSTRUCTION, or SHORT_INSTRUCTION with the short template.
    instruction: str | None = None
    # Tag around the list of categories in the user message.
    category_tag: str = "categories"
    # Tag around the text to classify.
    item_tag: str = "text"
    # Tag around the label in the answer (unless `bare_label`).
    output_tag: str = "category"
    # Answer with the label alone, no tag.
    bare_label: bool = False
    # One of TEMPLATES: whether the user message lists the categories.
    template: str = "full"

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise usage_error(
                "bad_template",
                f"--template must be one of {', '.join(TEMPLATES)}, not {self.template!r}.",
            )
        if self.instruction is None:
            default = DEFAULT_INSTRUCTION if self.lists_labels else SHORT_INSTRUCTION
            object.__setattr__(self, "instruction", default)

    @property
    def lists_labels(self) -> bool:
        return self.template == "full"

    def answer_format(self) -> str:
        """The sentence telling the model how to answer."""
        if self.bare_label:
            return "Answer with the category only."
        tag = self.output_tag
        return f"Answer with the category only, wrapped in <{tag}></{tag}>."

    def user_message(self, text: str, labels: Iterable[str]) -> str:
        head = f"{self.instruction}\n{self.answer_format()}\n\n"
        item = f"<{self.item_tag}>\n{text}\n</{self.item_tag}>"
        if not self.lists_labels:
            return head + item
        # Sorted so that every example (and every evaluation prompt) lists the same order.
        categories = "\n".join(sorted(set(labels)))
        return head + f"<{self.category_tag}>\n{categories}\n</{self.category_tag}>\n\n" + item

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


def label_set_path(output: Path) -> Path:
    """Where the label set of a formatted classification file is kept:
    `val.jsonl` → `val.labels.json`."""
    output = Path(output)
    return output.with_name(f"{output.stem}.labels.json")


def label_set_bytes(labels: Iterable[str], prompt: ClassificationPrompt) -> bytes:
    """What `tunelab format` writes to `label_set_path`: the sorted labels and the template."""
    record = {"labels": sorted(set(labels)), "template": prompt.template}
    return orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n"


def read_label_set(data_path: Path) -> list[str] | None:
    """The label set `tunelab format` kept beside `data_path`, or None when there is none."""
    path = label_set_path(data_path)
    return read_label_set_file(path) if path.is_file() else None


def read_label_set_file(path: Path) -> list[str]:
    """The labels of a label set file (`label_set_bytes`)."""
    path = Path(path)
    try:
        labels = orjson.loads(path.read_bytes())["labels"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as err:
        raise TunelabError(
            "bad_label_set",
            f"{path} is not a label set written by `tunelab format`: {err}",
            hint="delete it, or format the data again",
            path=path,
        ) from err
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise TunelabError(
            "bad_label_set", f"{path}: `labels` must be a list of strings.", path=path
        )
    return labels
