"""Streaming JSONL input: one line at a time, as raw bytes, so memory stays flat.

Lines are bytes, not str: decoding is left to the JSON parser (which checks UTF-8 itself), and
a line that is not UTF-8 can still be reported with its number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tunelab.errors import TunelabError

# What a JSON object or array line begins with; a line that begins otherwise is no JSON at all.
_JSON_OPENERS = ("{", "[", '"')
_SHOWN_CHARS = 30

# Large reads: fewer system calls on multi-GB files, still a flat few MB of memory.
_BUFFER_BYTES = 1 << 20


def open_jsonl(path: str | Path) -> BinaryIO:
    """Open a JSONL file for reading in binary; a missing or unreadable file is a TunelabError."""
    path = Path(path)
    if path.is_dir():
        raise TunelabError("not_a_file", f"{path} is a directory, not a JSONL file.", path=path)
    try:
        return path.open("rb", buffering=_BUFFER_BYTES)
    except FileNotFoundError:
        raise TunelabError(
            "file_not_found", f"{path} does not exist.", hint="check the path", path=path
        ) from None
    except OSError as err:
        raise TunelabError("file_unreadable", f"cannot read {path}: {err}", path=path) from None


def iter_bounded_lines(handle: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, raw bytes, length) for each line; a line over `max_bytes` comes back as
    None with its length: it is read past in blocks, never held whole, so one enormous line
    costs no more memory than a short one."""
    readline, number = handle.readline, 0
    while raw := readline(max_bytes + 1):
        number += 1
        if len(raw) <= max_bytes:
            yield number, raw, len(raw)
            continue
        length = len(raw)
        while not raw.endswith(b"\n") and (raw := readline(_BUFFER_BYTES)):
            length += len(raw)
        yield number, None, length


def iter_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, the line's raw bytes, line ending included) for each line.

    The ending is left on: JSON parsers treat it as whitespace, and not slicing every line
    is measurably faster on large files.
    """
    return enumerate(handle, 1)


def not_json_message(raw: bytes | str, where: str = "the line") -> str | None:
    """A plain message for a line that does not even begin like JSON (`not json`), `where`
    naming it ("line 2 of train.jsonl" where nothing else names the file and line); None for
    a line that does begin like JSON (its parser's message and column say more).

    The parser's own words for such a line mislead: `not json` reads as a misspelt `null`
    ("invalid literal, expected 'null'")."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = text.strip()
    if text.startswith(_JSON_OPENERS):
        return None
    shown = text[:_SHOWN_CHARS] + ("…" if len(text) > _SHOWN_CHARS else "")
    return f"{where} is not JSON (it begins {shown!r}): each line must be one JSON object"
