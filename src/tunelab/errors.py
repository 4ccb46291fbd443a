"""The one user-facing error type.

Everything a user can cause (a bad file, a missing key, an output that already exists)
raises `TunelabError` with a stable `code`, a plain `message` and a `hint` saying what to do.
Front ends render it in one line (CLI) or in OpenAI's error envelope (server); a traceback
means a bug in tunelab.
"""

from __future__ import annotations

import re
from pathlib import Path

# `scheme://user:password@`: the password of a URL's userinfo (group 3), anywhere in a text.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^\s/@:]*):([^\s/]+)@")
HIDDEN = "***"


def redact_urls(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` URL in it shown as
    `***`: what tunelab prints, serves or logs never holds one, though the URL it was given
    (an endpoint's, `MODEL@URL`, a database's) needs it to connect."""
    return _URL_PASSWORD.sub(rf"\1\2:{HIDDEN}@", text) if "@" in text else text


class TunelabError(Exception):
    """An error the user can act on.

    `code` is stable: scripts and tests may match on it. `path` and `line` (1-based) point
    at the input that caused it, when there is one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        hint: str | None = None,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        exit_code: int = 1,
    ) -> None:
        message = redact_urls(message)  # it may quote a URL the user gave, password included
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = redact_urls(hint) if hint else hint
        self.path = str(path) if path is not None else None
        self.line = line
        self.exit_code = exit_code

    def location(self) -> str:
        """`file:line` or `file`, or an empty string when the error has no input location."""
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    def __str__(self) -> str:
        where = self.location()
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text

    def to_dict(self) -> dict:
        """The error as JSON-ready data, for `--json` output and the server."""
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "path": self.path,
            "line": self.line,
        }


def usage_error(
    code: str, message: str, hint: str | None = None, *, path: str | Path | None = None
) -> TunelabError:
    """The error of a command used wrongly (a flag's value, flags that do not go together, a
    file named that is not there): it exits with 2, as click's own usage errors do."""
    return TunelabError(code, message, hint, path=path, exit_code=2)


class Interrupted(TunelabError):
    """The cancel event (Ctrl-C, the studio's Cancel) stopped a model part-way: `done` holds
    what it finished, the answers (or scores) of the first `len(done)` items, in order."""

    def __init__(self, done: list | None = None) -> None:
        super().__init__("cancelled", "the evaluation was cancelled.", exit_code=130)
        self.done = list(done or [])
        self.seconds = 0.0


def check_cancel(cancel, done: list | None = None) -> None:
    """Stop here if `cancel` (a `threading.Event`, or None) is set, keeping `done` (what was
    finished so far)."""
    if cancel is not None and cancel.is_set():
        raise Interrupted(done)
