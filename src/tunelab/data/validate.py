"""Validation of chat fine-tuning JSONL: every defect, as findings with stable codes.

One streaming pass per file (`scan_file`) reads each line once, checks it, and keeps only
fixed-size numbers per example (line, a 64-bit hash for duplicates, message and token
counts): memory stays flat however large the file. The common case, a well-formed example
of plain system/user/assistant messages, takes a fast path of a few type checks and one regex
over the raw line; anything else goes through `check_record`, which names every defect.
Tokens are counted in batches on a worker thread (native code, GIL released) while the next
batch is parsed.

Finding codes (severity; what tunelab decided where the providers differ):

- file: `empty_file` (error), `too_few_examples` (error: fewer valid examples than the target
  provider accepts; OpenAI needs 10), `bom` (error), `not_utf8`, `blank_line`,
  `invalid_json`, `not_an_object`, `line_too_long` (errors; the line is skipped; an over-long
  line is not even held in memory); `duplicate_key` (warning: the parser keeps the last).
- example: `missing_messages`, `messages_not_a_list`, `empty_messages`,
  `no_assistant_message` (errors); `unrecognized_key` (warning: top-level keys other than
  messages, tools, functions and parallel_tool_calls, `metadata` included, are not part of
  OpenAI's format; tunelab ignores them); `consecutive_same_role` (warning);
  `duplicate_example` (warning, names the first line); `in_both_files` (error: a validation
  example that is also a training example); `template_error` (error: the local model's chat
  template rejects the example).
- message: `message_not_an_object`, `missing_role`, `unrecognized_role` (roles: system, user,
  assistant, tool, function), `missing_content` (content may be absent or null only on an
  assistant message with tool_calls/function_call), `content_parts` (a list of content parts
  is multimodal input; text fine-tuning needs a string), `content_not_string`,
  `unrecognized_message_key` (keys: role, content, name, weight, tool_calls, tool_call_id,
  function_call), `invalid_name`, `invalid_tool_calls`, `invalid_weight` (0 or 1),
  `weight_on_non_assistant`, `special_token` (content that a tokenizer would read as a control
  token: the OpenAI/ChatML reserved ones and the target tokenizer's own) — all errors;
  `empty_content` (warning).
- tools (`data.tool_calls`): `invalid_tools` (`tools` is not a list of named function
  definitions), `unknown_tool` (a call names a tool the example does not declare),
  `invalid_tool_arguments` (a call's arguments are not a JSON object valid against the tool's
  parameters schema), `unmatched_tool_result` (a `tool` message whose `tool_call_id` is no
  earlier call's id) — all errors.
- `too_long` (warning, with `--model`): longer than the model's context. Every provider
  truncates such an example to the context (OpenAI and Together do; the local engine does the
  same), so it trains on less than it shows, and only the first `context` tokens are billed.

An example with an error is left out of the analysis; warnings keep it.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
from array import array
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from tunelab.catalog import ModelSpec, context_limit, resolve_model
from tunelab.data.jsonl import iter_bounded_lines, not_json_message, open_jsonl
from tunelab.data.tokens import MESSAGE_ROLES, RESERVED_SPECIAL_TOKENS, load_counter
from tunelab.data.tool_calls import check_tool_use

ERROR, WARNING = "error", "warning"
MAX_FINDINGS = 10_000
BATCH_SIZE = 4096
# A line longer than this is refused unread: no fine-tuning context holds 4 MiB of text
# (OpenAI's largest is 65,536 tokens, about 256 KiB), and tokenizing it whole would cost
# gigabytes of memory.
MAX_LINE_BYTES = 4 << 20
BOM = b"\xef\xbb\xbf"

ROLES = MESSAGE_ROLES
MESSAGE_KEYS = frozenset(
    ("role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call")
)
TOP_LEVEL_KEYS = frozenset(("messages", "tools", "functions", "parallel_tool_calls"))
_PLAIN_ROLES = ("system", "user", "assistant")

SEVERITY = {
    **dict.fromkeys(
        (
            "empty_file",
            "too_few_examples",
            "bom",
            "not_utf8",
            "blank_line",
            "line_too_long",
            "invalid_json",
            "not_an_object",
            "missing_messages",
            "messages_not_a_list",
            "empty_messages",
            "no_assistant_message",
            "in_both_files",
            "template_error",
            "message_not_an_object",
            "missing_role",
            "unrecognized_role",
            "missing_content",
            "content_parts",
            "content_not_string",
            "unrecognized_message_key",
            "invalid_name",
            "invalid_tool_calls",
            "invalid_weight",
            "weight_on_non_assistant",
            "special_token",
            "unknown_tool",
            "invalid_tool_arguments",
            "unmatched_tool_result",
        ),
        ERROR,
    ),
    **dict.fromkeys(
        (
            "unrecognized_key",
            "consecutive_same_role",
            "duplicate_example",
            "empty_content",
            "too_long",
            "duplicate_key",
        ),
        WARNING,
    ),
}
# The codes only preference (dpo) and reinforcement files have (`data.preference`,
# `data.reinforcement`); those files also get the codes above that apply to them.
METHOD_SEVERITY = dict.fromkeys(
    (
        "missing_input",
        "invalid_input",
        "missing_output",
        "invalid_output",
        "identical_outputs",
        "wrong_last_role",
        "invalid_tools",
        "missing_item_field",
    ),
    ERROR,
)
CODE_SEVERITY = {**SEVERITY, **METHOD_SEVERITY}

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: str
    line: int | None
    message: str
    file: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def special_token_pattern(tokens: tuple[str, ...]) -> re.Pattern[str]:
    """A regex matching any of `tokens` in text (longest first)."""
    ordered = sorted(set(tokens), key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in ordered))


_RESERVED_PATTERN = special_token_pattern(RESERVED_SPECIAL_TOKENS)


# ----- the detailed checks ----------------------------------------------------------------


def check_record(record: object, special: re.Pattern[str] = _RESERVED_PATTERN) -> list:
    """Every defect of one parsed line, as (code, message) pairs; [] for a clean example."""
    if not isinstance(record, dict):
        return [("not_an_object", f"the line is a JSON {_json_type(record)}, not an object")]
    problems = _unrecognized_keys(
        record,
        TOP_LEVEL_KEYS,
        "unrecognized_key",
        "unrecognized key {key!r}: OpenAI's chat format has no such key",
    )
    if "messages" not in record:
        return [*problems, ("missing_messages", 'the example has no "messages" list')]
    messages = record["messages"]
    if not isinstance(messages, list):
        kind = _json_type(messages)
        return [*problems, ("messages_not_a_list", f'"messages" is a {kind}, not a list')]
    if not messages:
        return [*problems, ("empty_messages", '"messages" is empty')]
    problems.extend(check_messages(messages, special))
    problems.extend(check_tool_use(record))
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append(("no_assistant_message", "the example has no assistant message"))
    return problems


def _unrecognized_keys(found: dict, known, code: str, message: str) -> list:
    """A (code, message) finding for each key of `found` not in `known`; `message` is
    formatted with the {key}."""
    return [(code, message.format(key=key)) for key in found if key not in known]


def check_messages(messages: list, special: re.Pattern[str] = _RESERVED_PATTERN) -> list:
    """The defects of each message of a list, and roles that repeat, as (code, message)."""
    problems, previous = [], None
    for index, message in enumerate(messages, 1):
        problems.extend(_check_message(message, index, special))
        role = message.get("role") if isinstance(message, dict) else None
        if isinstance(role, str) and role == previous:
            text = f"messages {index - 1} and {index} are both {role} messages"
            problems.append(("consecutive_same_role", text))
        previous = role
    return problems


def _check_message(message: object, index: int, special: re.Pattern[str]) -> list:
    where = f"message {index}"
    if not isinstance(message, dict):
        return [("message_not_an_object", f"{where} is a {_json_type(message)}, not an object")]
    problems = _unrecognized_keys(
        message,
        MESSAGE_KEYS,
        "unrecognized_message_key",
        where + " has an unrecognized key {key!r}",
    )
    role = message.get("role")
    if "role" not in message:
        problems.append(("missing_role", f"{where} has no role"))
    elif role not in ROLES or not isinstance(role, str):
        problems.append(("unrecognized_role", f"{where} has role {role!r}; use one of {ROLES}"))
    problems.extend(_check_content(message, where, role, special))
    problems.extend(_check_extras(message, where, role, special))
    return problems


def _check_content(message: dict, where: str, role: object, special: re.Pattern[str]) -> list:
    content = message.get("content")
    calls = message.get("tool_calls") is not None or message.get("function_call") is not None
    if content is None:
        if role == "assistant" and calls:
            return []
        return [("missing_content", f"{where} has no content")]
    if isinstance(content, list):
        text = f"{where} has a list of content parts; text fine-tuning needs a string"
        return [("content_parts", text)]
    if not isinstance(content, str):
        return [("content_not_string", f"{where} content is a {_json_type(content)}")]
    found = special.search(content)
    if found:
        return [("special_token", f"{where} contains the special token {found.group()!r}")]
    if not content.strip() and not calls:
        return [("empty_content", f"{where} ({role}) has empty content")]
    return []


def _check_extras(message: dict, where: str, role: object, special: re.Pattern[str]) -> list:
    problems = []
    if "name" in message:
        name = message["name"]
        if not isinstance(name, str):
            problems.append(("invalid_name", f"{where} name is a {_json_type(name)}"))
        elif special.search(name):
            problems.append(("special_token", f"{where} name contains a special token"))
    calls = message.get("tool_calls")
    if calls is not None and not (
        role == "assistant" and isinstance(calls, list) and all(isinstance(c, dict) for c in calls)
    ):
        text = f"{where} tool_calls must be a list of objects on an assistant message"
        problems.append(("invalid_tool_calls", text))
    if "weight" in message:
        weight = message["weight"]
        if type(weight) is not int or weight not in (0, 1):
            problems.append(("invalid_weight", f"{where} weight is {weight!r}; use 0 or 1"))
        if role != "assistant":
            text = f"{where} has a weight, but only assistant messages are weighted"
            problems.append(("weight_on_non_assistant", text))
    return problems


def _json_type(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _json_error(raw: bytes) -> orjson.JSONDecodeError | None:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return err
    return None


def _may_repeat_keys(raw: bytes, n_messages: int) -> bool:
    """Whether a plain example's raw line might hold a key twice (which parsing hides).

    A JSON string cannot hold an unescaped quote, so `"role"` in the raw bytes is a key or
    a value that is exactly "role": a plain example has each once per message unless a key
    repeats (or, rarely, a value is one of the names: then the exact check runs anyway).
    """
    return (
        raw.count(b'"role"') != n_messages
        or raw.count(b'"content"') != n_messages
        or raw.count(b'"messages"') != 1
    )


def duplicate_keys(raw: bytes) -> list[str]:
    """Keys that appear more than once in one object of the JSON line, in order met."""

    found: list[str] = []

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen and key not in found:
                found.append(key)
            seen.add(key)
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return []  # orjson parsed it; a line too deep for Python's parser is left unchecked
    return found


def fast_messages(record: object) -> list | None:
    """The messages of a plain, clean example, or None when it needs the detailed checks.

    Plain: only "messages"; each message exactly {role, content} with a non-blank string
    content and a system/user/assistant role, no two consecutive roles alike, an assistant.
    Special tokens are checked on the raw line by the caller.
    """
    if type(record) is not dict or len(record) != 1:
        return None
    messages = record.get("messages")
    if type(messages) is not list or not messages:
        return None
    previous = None
    has_assistant = False
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role = message.get("role")
        content = message.get("content")
        if role not in _PLAIN_ROLES or role == previous or type(content) is not str:
            return None
        if not content or content.isspace():
            return None
        has_assistant = has_assistant or role == "assistant"
        previous = role
    return messages if has_assistant else None


# ----- the streaming pass -------------------------------------------------------------------


@dataclass
class FileScan:
    """What one pass over a file found; per-example data are fixed-size numbers only."""

    path: str
    label: str | None = None  # None for the training file, the path for --val findings
    n_examples: int = 0  # non-blank lines
    n_valid: int = 0  # examples without errors
    findings: list[Finding] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    n_omitted: int = 0
    n_missing_system: int = 0
    n_missing_user: int = 0
    # One entry per valid example, in file order: 24 bytes per example in all.
    lines: array = field(default_factory=lambda: array("i"))
    hashes: array = field(default_factory=lambda: array("q"))
    n_messages: array = field(default_factory=lambda: array("i"))
    tokens: array = field(default_factory=lambda: array("i"))
    assistant_tokens: array = field(default_factory=lambda: array("i"))

    def add(self, code: str, line: int | None, message: str) -> None:
        self.counts[code] += 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(code, CODE_SEVERITY[code], line, message, self.label))
        else:
            self.n_omitted += 1

    def array_of(self, name: str) -> np.ndarray:
        """One of the per-example arrays as int64 numbers."""
        values = getattr(self, name)
        return np.frombuffer(values, dtype=np.int64 if values.typecode == "q" else np.int32).astype(
            np.int64, copy=False
        )


def report_long_line(scan: FileScan, number: int, length: int) -> None:
    """A line over `MAX_LINE_BYTES`, skipped unread."""
    scan.n_examples += 1
    limit = f"{MAX_LINE_BYTES >> 20} MiB"
    text = f"the line is {length:,} bytes, over the {limit} an example may take; not read"
    scan.add("line_too_long", number, text)


def report_duplicate_keys(scan: FileScan, number: int, raw: bytes) -> None:
    for key in duplicate_keys(raw):
        scan.add(
            "duplicate_key",
            number,
            f"key {key!r} appears twice in one object; JSON readers keep only the last value",
        )


def report_bad_line(scan: FileScan, number: int, raw: bytes, error: Exception) -> None:
    """A line the JSON parser refused: blank, not UTF-8, or invalid JSON (with its column)."""
    if not raw.strip():
        scan.add("blank_line", number, "blank line; every line must be a JSON object")
        return
    scan.n_examples += 1
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        text = f"not UTF-8 (byte {err.start + 1} of the line); save the file as UTF-8"
        scan.add("not_utf8", number, text)
        return
    plain = not_json_message(raw, f"line {number} of {scan.path}")
    if plain:
        scan.add("invalid_json", number, plain)
        return
    # orjson's own "line 1 column N" would be misread as the file's line; and the line's
    # own ending must not count, or a truncated line is reported at column 1 of "line 2".
    error = _json_error(raw.rstrip(b"\r\n")) or error
    where = f" at column {error.colno}" if hasattr(error, "colno") else ""
    scan.add("invalid_json", number, f"invalid JSON{where}: {getattr(error, 'msg', error)}")


@dataclass
class _Batch:
    lines: list = field(default_factory=list)
    hashes: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    tools: list = field(default_factory=list)  # each example's tool definitions, or None


class _Scanner:
    def __init__(self, scan: FileScan, counter, context_limit, observe, progress) -> None:
        self.scan = scan
        self.counter = counter
        self.context_limit = context_limit
        self.observe = observe
        self.progress = progress
        tokens = counter.special_tokens if counter else RESERVED_SPECIAL_TOKENS
        self.special = special_token_pattern(tokens)
        # The fast path looks for special tokens in the raw line. JSON may spell any character
        # as \uXXXX, so a line with escapes gets the detailed check, which sees decoded
        # strings. Escapes of ASCII start with \u00. (Two searches: a regex whose
        # alternatives share a prefix is several times faster than one that mixes both.)
        escape = rb"\\u00" if all(t.isascii() for t in tokens) else rb"\\u"
        self.raw_escape = re.compile(escape)
        raw = [re.escape(t.encode()) for t in sorted(tokens, key=len, reverse=True)]
        self.raw_special = re.compile(b"|".join(raw))
        self.batch = _Batch()
        self.pending: tuple[_Batch, Future | None] | None = None

    def run(self, pool: ThreadPoolExecutor) -> None:
        scan, loads = self.scan, orjson.loads
        special, escape = self.raw_special.search, self.raw_escape.search
        with open_jsonl(scan.path) as handle:
            for number, raw, length in iter_bounded_lines(handle, MAX_LINE_BYTES):
                if raw is None:
                    self._too_long_line(number, length)
                    continue
                if number == 1 and raw.startswith(BOM):
                    scan.add("bom", 1, "the file starts with a byte-order mark; save it without")
                    raw = raw[len(BOM) :]
                try:
                    record = loads(raw)
                except orjson.JSONDecodeError as err:
                    self._bad_line(number, raw, err)
                    continue
                scan.n_examples += 1
                messages = fast_messages(record)
                # A plain example can only hold special tokens; look closer when the raw line
                # may contain one (literally, or behind a \u escape).
                if messages is None or (
                    (special(raw) is not None or escape(raw) is not None)
                    and any(self.special.search(m["content"]) for m in messages)
                ):
                    self._check_duplicate_keys(number, raw)
                    messages = self._check(number, record)
                    if messages is None:
                        continue
                elif _may_repeat_keys(raw, len(messages)):
                    self._check_duplicate_keys(number, raw)
                self._accept(number, record, messages)
                if len(self.batch.lines) >= BATCH_SIZE:
                    self._submit(pool)
                    if self.progress:
                        self.progress(handle.tell())
        self._submit(pool)
        self._finalize_pending()

    def _too_long_line(self, number: int, length: int) -> None:
        report_long_line(self.scan, number, length)

    def _check_duplicate_keys(self, number: int, raw: bytes) -> None:
        report_duplicate_keys(self.scan, number, raw)

    def _bad_line(self, number: int, raw: bytes, error: Exception) -> None:
        report_bad_line(self.scan, number, raw, error)

    def _check(self, number: int, record: object) -> list | None:
        problems = check_record(record, self.special)
        for code, message in problems:
            self.scan.add(code, number, message)
        if any(CODE_SEVERITY[code] == ERROR for code, _ in problems):
            return None
        return record["messages"]

    def _accept(self, number: int, record: dict, messages: list) -> None:
        batch = self.batch
        batch.lines.append(number)
        # hash() of the canonical bytes: 8 bytes per example, salted per process, which is
        # all duplicate detection within one run needs.
        batch.hashes.append(hash(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)))
        batch.messages.append(messages)
        tools = record.get("tools")
        batch.tools.append(tools if isinstance(tools, list) and tools else None)

    def _submit(self, pool: ThreadPoolExecutor) -> None:
        batch, self.batch = self.batch, _Batch()
        future = None
        if self.counter is not None and batch.messages:
            # Python work here; only the tokenizer's native work goes to the worker, so the
            # two threads do not take turns on the GIL.
            tools = batch.tools if any(batch.tools) else None
            future = pool.submit(self.counter.prepare(batch.messages, tools))
        self._finalize_pending()
        self.pending = (batch, future)

    def _finalize_pending(self) -> None:
        if self.pending is None:
            return
        batch, future = self.pending
        self.pending = None
        counts = future.result() if future is not None else None
        keep = list(range(len(batch.lines)))
        if counts is not None and counts.failures:
            for i, reason in counts.failures.items():
                self.scan.add("template_error", batch.lines[i], reason)
            keep = [i for i in keep if i not in counts.failures]
        self._store(batch, keep, counts)

    def _store(self, batch: _Batch, keep: list[int], counts) -> None:
        scan = self.scan
        lines, hashes, messages = batch.lines, batch.hashes, batch.messages
        if len(keep) < len(lines):
            lines = [lines[i] for i in keep]
            hashes = [hashes[i] for i in keep]
            messages = [messages[i] for i in keep]
        scan.lines.extend(lines)
        scan.hashes.extend(hashes)
        scan.n_messages.extend(map(len, messages))
        scan.n_valid += len(lines)
        roles = [{m["role"] for m in conversation} for conversation in messages]
        scan.n_missing_system += sum("system" not in r for r in roles)
        scan.n_missing_user += sum("user" not in r for r in roles)
        if self.observe is not None:
            for conversation in messages:
                self.observe(conversation)
        if counts is not None:
            self._store_counts(counts.total[keep], counts.assistant[keep], lines)

    def _store_counts(self, total: np.ndarray, assistant: np.ndarray, lines: list) -> None:
        scan = self.scan
        scan.tokens.extend(total.tolist())
        scan.assistant_tokens.extend(assistant.tolist())
        if self.context_limit:
            for i in np.flatnonzero(total > self.context_limit).tolist():
                text = (
                    f"{int(total[i]):,} tokens, over the {self.context_limit:,}-token context; "
                    "training truncates it"
                )
                scan.add("too_long", lines[i], text)


def scan_file(
    path: str | Path,
    *,
    counter=None,
    context_limit: int | None = None,
    label: str | None = None,
    observe: Callable[[list], None] | None = None,
    progress: Progress | None = None,
) -> FileScan:
    """One pass over a chat JSONL file: findings, and token counts when `counter` is given.

    `observe(messages)` sees each valid example once (after its tokens are counted);
    `progress(bytes_read)` is called every batch. Duplicates are reported at the end.
    """
    scan = FileScan(str(path), label=label)
    # Parsed examples hold no reference cycles, so the cyclic collector has nothing to free;
    # left on, it rescans every batch in flight thousands of times per file.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-tokens") as pool:
            _Scanner(scan, counter, context_limit, observe, progress).run(pool)
    finally:
        if collecting:
            gc.enable()
    finish_scan(scan)
    if progress:
        progress(os.path.getsize(path))
    return scan


def finish_scan(scan: FileScan) -> None:
    """The findings that need the whole file: repeated examples, no example at all."""
    for line, first in _duplicates(scan.array_of("lines"), scan.array_of("hashes")):
        scan.add("duplicate_example", line, f"duplicate of the example on line {first}")
    if scan.n_examples == 0:
        scan.add("empty_file", None, "the file has no examples")


def _first_lines(lines: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Hashes sorted; at each position the first line with that hash; run starts; the order."""
    order = np.argsort(hashes, kind="stable")  # stable: equal hashes keep file order
    sorted_hashes = hashes[order]
    starts = np.ones(len(sorted_hashes), dtype=bool)
    starts[1:] = sorted_hashes[1:] != sorted_hashes[:-1]
    first_index = np.flatnonzero(starts)[np.cumsum(starts) - 1]
    return sorted_hashes, lines[order][first_index], starts, order


def _duplicates(lines: np.ndarray, hashes: np.ndarray) -> list[tuple[int, int]]:
    """(line, first line with the same example) for every repeat, in line order."""
    if len(hashes) < 2:
        return []
    _, first_lines, starts, order = _first_lines(lines, hashes)
    repeats = ~starts
    pairs = zip(lines[order][repeats].tolist(), first_lines[repeats].tolist(), strict=True)
    return sorted(pairs)


def _shared(train: FileScan, val: FileScan) -> list[tuple[int, int]]:
    """(validation line, training line) for every validation example also in training."""
    train_hashes = train.array_of("hashes")
    if not len(train_hashes) or not len(val.hashes):
        return []
    sorted_hashes, first_lines, _, _ = _first_lines(train.array_of("lines"), train_hashes)
    val_hashes = val.array_of("hashes")
    at = np.minimum(np.searchsorted(sorted_hashes, val_hashes), len(sorted_hashes) - 1)
    found = sorted_hashes[at] == val_hashes
    val_lines = val.array_of("lines")[found].tolist()
    return list(zip(val_lines, first_lines[at[found]].tolist(), strict=True))


# ----- the report -------------------------------------------------------------------------


@dataclass
class ValidationReport:
    """Findings for a training file (and optional validation file) against a target model."""

    train: FileScan
    val: FileScan | None = None
    model: ModelSpec | None = None
    notes: list[str] = field(default_factory=list)
    # The format checked ("supervised", "dpo", "reinforcement"; see `data.methods`) and
    # why, when it was detected rather than given.
    method: str = "supervised"
    method_detection: str | None = None

    @property
    def scans(self) -> list[FileScan]:
        return [self.train] if self.val is None else [self.train, self.val]

    @property
    def counts(self) -> Counter:
        return sum((scan.counts for scan in self.scans), Counter())

    @property
    def findings(self) -> list[Finding]:
        """All findings, file by file in line order (file-level ones first), capped."""
        ordered = []
        for scan in self.scans:
            ordered.extend(sorted(scan.findings, key=lambda f: f.line or 0))
        return ordered[:MAX_FINDINGS]

    @property
    def n_omitted(self) -> int:
        return sum(scan.n_omitted for scan in self.scans) + max(
            0, sum(len(scan.findings) for scan in self.scans) - MAX_FINDINGS
        )

    def n_with(self, severity: str) -> int:
        return sum(n for code, n in self.counts.items() if CODE_SEVERITY[code] == severity)

    @property
    def n_errors(self) -> int:
        return self.n_with(ERROR)

    @property
    def n_warnings(self) -> int:
        return self.n_with(WARNING)

    @property
    def ok(self) -> bool:
        return self.n_errors == 0

    @property
    def n_examples(self) -> int:
        return self.train.n_examples

    def summary(self) -> dict:
        """Counts only: what `analyze` reports under "validation"."""
        counts = self.counts
        return {
            "ok": self.ok,
            "n_errors": self.n_errors,
            "n_warnings": self.n_warnings,
            "by_code": dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))),
        }

    def to_dict(self) -> dict:
        return {
            **self.summary(),
            "file": self.train.path,
            "method": self.method,
            "val_file": self.val.path if self.val else None,
            "model": self.model.name if self.model else None,
            "provider": self.model.provider if self.model else None,
            "n_examples": self.train.n_examples,
            "n_valid_examples": self.train.n_valid,
            "val": None if self.val is None else _file_counts(self.val),
            "findings": [finding.to_dict() for finding in self.findings],
            "n_findings_omitted": self.n_omitted,
            "notes": self.notes,
        }


def _file_counts(scan: FileScan) -> dict:
    return {"file": scan.path, "n_examples": scan.n_examples, "n_valid_examples": scan.n_valid}


def check_across(train: FileScan, val: FileScan | None, model: ModelSpec | None) -> None:
    """The findings that need a whole file: provider minimum, examples in both files."""
    if model is not None and train.n_valid < model.min_examples:
        text = (
            f"{train.n_valid} valid examples; {model.provider} needs at least "
            f"{model.min_examples} to fine-tune {model.name}"
        )
        train.add("too_few_examples", None, text)
    if val is not None:
        for line, train_line in _shared(train, val):
            val.add("in_both_files", line, f"also in the training file (line {train_line})")


def scan_files(
    path: str | Path,
    val_path: str | Path | None,
    spec: ModelSpec | None,
    counter,
    context: int | None,
    progress: Callable[[str, int], None] | None,
    observe: Callable[[list], None] | None = None,
) -> tuple[FileScan, FileScan | None]:
    """Scan a training file (`observe` sees its examples) and a validation file, then check
    them against each other. `progress(path, bytes_read)` reports reading progress."""

    def scan_one(file, label, report) -> FileScan:
        seen = observe if label is None else None
        return scan_file(
            file, counter=counter, context_limit=context, label=label, observe=seen, progress=report
        )

    return scan_pair(path, val_path, spec, progress, scan_one)


def scan_pair(
    path: str | Path,
    val_path: str | Path | None,
    spec: ModelSpec | None,
    progress: Callable[[str, int], None] | None,
    scan_one: Callable[[str | Path, str | None, Callable[[int], None] | None], FileScan],
) -> tuple[FileScan, FileScan | None]:
    """A training file and its validation file, each read by `scan_one(file, label, report)`
    (label None for the training file; `report(bytes_read)` feeds `progress(path, ...)`),
    then checked against each other."""
    scans = []
    for file, label in ((path, None), (val_path, str(val_path))):
        if file is not None:
            report = (lambda done, f=str(file): progress(f, done)) if progress else None
            scans.append(scan_one(file, label, report))
    train, val = scans[0], (scans[1] if len(scans) > 1 else None)
    check_across(train, val, spec)
    return train, val


def validate_file(
    path: str | Path,
    *,
    val_path: str | Path | None = None,
    model: str | ModelSpec | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> ValidationReport:
    """Validate a training file (and a validation file) for fine-tuning `model`.

    Without a model, the checks that need one (context length, the provider's minimum size,
    the tokenizer's own special tokens) are skipped and a note says so.
    `progress(path, bytes_read)` reports reading progress.
    """
    spec = resolve_model(model) if isinstance(model, str) else model
    counter = load_counter(spec) if spec is not None else None
    context = context_limit(spec) if spec is not None else None
    train, val = scan_files(path, val_path, spec, counter, context, progress)
    notes = [] if spec else ["no --model: context length and provider minimum not checked"]
    return ValidationReport(train, val, spec, notes)
