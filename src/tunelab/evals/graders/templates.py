"""Template strings as OpenAI's graders render them: `{{ item.answer }}`,
`{{ sample.output_text }}`, `{{ sample.output_json.city }}`, `{{ item.tags[0] }}`.

Only the `item` and `sample` namespaces exist; a path reads nested objects (`.key`) and
lists (`[index]` or `.index`). Strings are inserted as they are, anything else as JSON.
A path that names nothing is an error (`MissingVariable`), never an empty string: a typo
would otherwise grade every sample against nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


class MissingVariable(LookupError):
    """A template names a variable the item or the sample does not have."""


@dataclass(frozen=True)
class Sample:
    """What the model under grading said: `output_text`, and `output_json` where that text
    is a JSON value (OpenAI fills it from a structured answer)."""

    output_text: str
    output_json: object = None
    output_tools: list = field(default_factory=list)

    @classmethod
    def from_text(cls, text: str) -> Sample:
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        return cls(text, parsed)

    def namespace(self) -> dict:
        return {
            "output_text": self.output_text,
            "output_json": self.output_json,
            "output_tools": self.output_tools,
        }


def render(template: str, sample: Sample, item: dict) -> str:
    """`template` with every `{{ namespace.path }}` replaced by its value."""
    namespaces = {"item": item, "sample": sample.namespace()}
    return _PLACEHOLDER.sub(lambda found: _text(lookup(found.group(1), namespaces)), template)


def lookup(path: str, namespaces: dict):
    """The value at `path` (`item.a.b[0]`)."""
    steps = [name or int(index) for name, index in _STEP.findall(path)]
    if not steps or steps[0] not in namespaces:
        raise MissingVariable(f"{{{{ {path} }}}}: the namespace must be `item` or `sample`")
    value = namespaces[steps[0]]
    for step in steps[1:]:
        value = _step(value, step, path)
    return value


def _step(value, step, path: str):
    if isinstance(value, dict) and str(step) in value:
        return value[str(step)]
    if isinstance(value, list) and str(step).isdigit() and int(step) < len(value):
        return value[int(step)]
    raise MissingVariable(f"{{{{ {path} }}}}: no {step!r} there")


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
