"""Base URLs of hosted and OpenAI-compatible servers, checked before anything is stored or sent.

A URL reaches tunelab from a user's hands (`providers add`, `--base-url`, `MODEL@URL`,
`OPENAI_BASE_URL`) or from a file written earlier (`endpoints.json`, the registry). Each is
checked here when it is added and again when a client is built from it, so that a newline,
a host of 100,000 characters or an unclosed `[::1` is one clear error, never a traceback
from the HTTP library at the first request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tunelab.errors import usage_error

MAX_URL_LENGTH = 2048  # what browsers and proxies reliably pass; a base URL is far shorter
MAX_HOST_LENGTH = 253  # the longest DNS name
HINT = (
    "give an http(s) URL such as http://127.0.0.1:8000/v1; a stored endpoint is changed with "
    "`tunelab providers add NAME URL --replace`"
)


def check_base_url(url: str, *, where: str = "the base URL") -> str:
    """`url` if it is a usable http(s) base URL; else a `TunelabError` saying what is wrong."""
    problem = _problem(url)
    if problem is not None:
        shown = url if len(url) <= 80 else f"{url[:60]}…({len(url)} characters)"
        raise usage_error(
            "invalid_base_url",
            f"{where} {shown!r} is not a usable http(s) URL: {problem}.",
            hint=HINT,
        )
    return url


def _problem(url: str) -> str | None:
    """What makes `url` unusable as a base URL, or None."""
    if len(url) > MAX_URL_LENGTH:
        return f"longer than {MAX_URL_LENGTH} characters"
    if any(ord(char) < 0x20 or ord(char) == 0x7F or char.isspace() for char in url):
        return "it holds a control character or a space"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises on a port that is not one
    except ValueError as err:
        return str(err)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not host:
        return "it names no host"
    if len(host) > MAX_HOST_LENGTH:
        return f"the host is longer than {MAX_HOST_LENGTH} characters"
    if port == 0:
        return "port 0 is not a port a server listens on"
    return None
