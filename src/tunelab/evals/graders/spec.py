"""Grader specifications: OpenAI's JSON shapes (and tunelab's own two) read into typed,
validated objects with `parse_grader`.

OpenAI's types: `string_check`, `text_similarity`, `score_model`, `label_model`, `python`
and `multi` (its `graders` either an object of named graders, as OpenAI's guide writes it,
or one grader, as the SDK's type says, named by its `name`). tunelab's own: `mongo_query`
(the NL→MongoDB scorer of `tunelab eval queries`: `metric` `parse`, `exact` or `structural`)
and `label_match` (the answer is one label of `labels`, read as `tunelab eval classify`
reads it, and equals the reference). Every problem in a specification is reported at once,
in one TunelabError `grader_invalid` whose message names each field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from tunelab.errors import TunelabError
from tunelab.evals.graders.formula import Formula, parse_formula
from tunelab.evals.graders.similarity import ROUGE_ORDERS

STRING_OPERATIONS = ("eq", "ne", "like", "ilike")
SIMILARITY_METRICS = ("cosine", "fuzzy_match", "bleu", "gleu", "meteor", *ROUGE_ORDERS, "rouge_l")
MONGO_METRICS = ("parse", "exact", "structural")
ROLES = ("user", "assistant", "system", "developer")
MAX_PYTHON_SOURCE = 256 * 1024  # OpenAI's limit on a python grader's source


@dataclass(frozen=True)
class _Comparison:
    """A grader comparing a templated input with a templated reference."""

    name: str
    input: str
    reference: str


@dataclass(frozen=True)
class StringCheck(_Comparison):
    operation: str
    type: str = "string_check"


@dataclass(frozen=True)
class TextSimilarity(_Comparison):
    evaluation_metric: str
    pass_threshold: float | None = None
    type: str = "text_similarity"


@dataclass(frozen=True)
class Message:
    """One templated message a model grader sends (text only: local models read no images)."""

    role: str
    content: str


@dataclass(frozen=True)
class _ModelGrader:
    """A grader that asks `model` with templated messages."""

    name: str
    model: str
    input: tuple[Message, ...]


@dataclass(frozen=True)
class ScoreModel(_ModelGrader):
    range: tuple[float, float] = (0.0, 1.0)
    max_tokens: int = 512
    temperature: float = 0.0
    pass_threshold: float | None = None
    type: str = "score_model"


@dataclass(frozen=True)
class LabelModel(_ModelGrader):
    labels: tuple[str, ...]
    passing_labels: tuple[str, ...]
    type: str = "label_model"


@dataclass(frozen=True)
class Python:
    name: str
    source: str
    type: str = "python"


@dataclass(frozen=True)
class Multi:
    name: str
    graders: dict
    calculate_output: Formula
    type: str = "multi"


@dataclass(frozen=True)
class MongoQuery(_Comparison):
    metric: str = "structural"
    type: str = "mongo_query"


@dataclass(frozen=True)
class LabelMatch(_Comparison):
    labels: tuple[str, ...] = ()
    type: str = "label_match"


Grader = (
    StringCheck
    | TextSimilarity
    | ScoreModel
    | LabelModel
    | Python
    | Multi
    | MongoQuery
    | LabelMatch
)


def read_grader_file(path: str | Path) -> dict:
    """A grader definition file's JSON, checked by `parse_grader` (errors name the file)."""
    try:
        definition = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as err:
        text = f"the grader definition is not JSON: {err.msg}"
        raise TunelabError("invalid_grader_file", text, path=path) from None
    except OSError as err:
        message = f"cannot read it: {err.strerror}"
        raise TunelabError("invalid_grader_file", message, path=path) from None
    try:
        parse_grader(definition)
    except TunelabError as err:
        err.path = str(path)
        raise
    return definition


def parse_grader(spec) -> Grader:
    """The grader `spec` (JSON data) describes; raises TunelabError `grader_invalid`
    listing every problem found."""
    problems: list[str] = []
    grader = _Reader(spec, "grader", problems).grader()
    if problems:
        raise TunelabError(
            "grader_invalid",
            "invalid grader: " + "; ".join(problems),
            hint="see OpenAI's grader reference or README's graders table for the fields",
        )
    return grader


class _Reader:
    """Reads one JSON object at `where`, noting each problem instead of stopping at it."""

    def __init__(self, data, where: str, problems: list[str]) -> None:
        self.data = data if isinstance(data, dict) else {}
        self.where, self.problems = where, problems
        if not isinstance(data, dict):
            self.problem(f"{where} must be an object")

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or (key == "name" and not value.strip()):
            self.problem(
                f"{self.where}.{key} must be a non-empty string"
                if key == "name"
                else f"{self.where}.{key} must be a string"
            )
            return ""
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            self.problem(f"{self.where}.{key} is {value!r}; one of {', '.join(choices)}")
        return value if isinstance(value, str) else ""

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.data.get(key, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            self.problem(f"{self.where}.{key} must be a number")
            return default
        return value

    def strings(self, key: str, required: bool = True) -> tuple[str, ...]:
        value = self.data.get(key, [] if not required else None)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(f"{self.where}.{key} must be a list of strings")
            return ()
        return tuple(value)

    def grader(self) -> Grader:
        kind = self.data.get("type")
        read = _READERS.get(kind)
        if read is None:
            self.problem(f"{self.where}.type is {kind!r}; one of {', '.join(_READERS)}")
            return StringCheck("", "", "", "eq")
        return read(self)


def _compared(r: _Reader) -> tuple[str, str, str]:
    """The fields every `_Comparison` grader starts with: name, input, reference."""
    return r.text("name"), r.text("input"), r.text("reference")


def _string_check(r: _Reader) -> StringCheck:
    return StringCheck(*_compared(r), r.choice("operation", STRING_OPERATIONS))


def _text_similarity(r: _Reader) -> TextSimilarity:
    return TextSimilarity(
        *_compared(r),
        r.choice("evaluation_metric", SIMILARITY_METRICS),
        r.number("pass_threshold"),
    )


def _messages(r: _Reader) -> tuple[Message, ...]:
    value = r.data.get("input")
    if not isinstance(value, list) or not value:
        r.problem(f"{r.where}.input must be a non-empty list of messages")
        return ()
    messages = []
    for index, data in enumerate(value):
        message = _Reader(data, f"{r.where}.input[{index}]", r.problems)
        role = message.choice("role", ROLES)
        messages.append(Message(role, _content_text(message)))
    return tuple(messages)


def _content_text(r: _Reader) -> str:
    """A message's content as text: a string, or text parts (`input_text`, `output_text`)."""
    content = r.data.get("content")
    parts = content if isinstance(content, list) else [content]
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in ("input_text", "output_text"):
            texts.append(str(part.get("text", "")))
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            r.problem(f"{r.where}.content: {kind!r} parts are not supported (text only)")
    return "".join(texts)


def _score_model(r: _Reader) -> ScoreModel:
    sampling = r.data.get("sampling_params") or {}
    params = _Reader(sampling, f"{r.where}.sampling_params", r.problems)
    low, high = _score_range(r)
    return ScoreModel(
        r.text("name"),
        r.text("model"),
        _messages(r),
        (low, high),
        int(params.number("max_completions_tokens", 512) or 512),
        float(params.number("temperature", 0.0) or 0.0),
        r.number("pass_threshold"),
    )


def _score_range(r: _Reader) -> tuple[float, float]:
    value = r.data.get("range") or [0, 1]
    numeric = isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )
    if not numeric or len(value) != 2 or value[0] >= value[1]:
        r.problem(f"{r.where}.range must be two increasing numbers")
        return 0.0, 1.0
    return float(value[0]), float(value[1])


def _label_model(r: _Reader) -> LabelModel:
    labels, passing = r.strings("labels"), r.strings("passing_labels")
    if not labels:
        r.problem(f"{r.where}.labels must name at least one label")
    if set(passing) - set(labels):
        r.problem(f"{r.where}.passing_labels must be a subset of labels")
    return LabelModel(r.text("name"), r.text("model"), _messages(r), labels, passing)


def _python(r: _Reader) -> Python:
    source = r.text("source")
    if len(source.encode()) > MAX_PYTHON_SOURCE:
        r.problem(f"{r.where}.source is over {MAX_PYTHON_SOURCE // 1024} KB")
    else:
        _check_python_source(r, source)
    return Python(r.text("name"), source)


def _check_python_source(r: _Reader, source: str) -> None:
    """Compiles (never runs) the source: a syntax error or no `grade` is found up front."""
    try:
        compile(source, "<grader>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as err:
        r.problem(f"{r.where}.source does not compile: {err}")
        return
    if "def grade" not in source:
        r.problem(f"{r.where}.source must define grade(sample, item)")


def _multi(r: _Reader) -> Multi:
    graders = _sub_graders(r)
    try:
        formula = parse_formula(r.text("calculate_output"))
    except TunelabError as err:
        r.problem(err.message)
        return Multi(r.text("name"), graders, parse_formula("0"))
    unknown = sorted(formula.names - set(graders))
    if unknown:
        r.problem(f"{r.where}.calculate_output names no sub-grader: {', '.join(unknown)}")
    return Multi(r.text("name"), graders, formula)


def _sub_graders(r: _Reader) -> dict:
    value = r.data.get("graders")
    if isinstance(value, dict) and "type" in value:  # one grader, the SDK's shape
        value = {value.get("name", ""): value}
    if not isinstance(value, dict) or not value:
        r.problem(f"{r.where}.graders must be an object of named graders")
        return {}
    return {
        key: _Reader(data, f"{r.where}.graders.{key}", r.problems).grader()
        for key, data in value.items()
    }


def _mongo_query(r: _Reader) -> MongoQuery:
    return MongoQuery(*_compared(r), r.choice("metric", MONGO_METRICS, "structural"))


def _label_match(r: _Reader) -> LabelMatch:
    return LabelMatch(*_compared(r), r.strings("labels", False))


_READERS = {
    "string_check": _string_check,
    "text_similarity": _text_similarity,
    "score_model": _score_model,
    "label_model": _label_model,
    "python": _python,
    "multi": _multi,
    "mongo_query": _mongo_query,
    "label_match": _label_match,
}
