"""Bounds on what a hosted or OpenAI-compatible server can make a client wait for or read.

A server tunelab talks to may be anything a user typed a URL for. Every request has a
timeout (`REQUEST_TIMEOUT`; answers, which a slow CPU server may take minutes to write, get
`ANSWER_TIMEOUT`), and every response body is counted as it arrives and cut off past a cap
(`MAX_BODY_BYTES` for API answers, `MAX_FILE_BYTES` for a file's content, which is written
to disk as it comes): a server that sends without end costs neither memory nor time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tunelab.errors import TunelabError
from tunelab.lazy import LazyModule

if TYPE_CHECKING:
    import httpx2
    import openai
else:  # the SDK loads when a call needs it, not at `tunelab --help`
    openai = LazyModule("openai")

CONNECT_SECONDS = 10.0
REQUEST_SECONDS = 60.0  # listing, retrieving, uploading: a silent minute is a hung server
ANSWER_SECONDS = 600.0  # a chat answer: the SDK's own default, for slow CPU servers
MAX_BODY_BYTES = 64 << 20  # a page of 100 jobs is a few hundred kB
MAX_FILE_BYTES = 2 << 30  # OpenAI takes training files up to 512 MB


def request_timeout(read: float | None = None) -> openai.Timeout:
    """`read` seconds (`REQUEST_SECONDS` unless given) between bytes; a connect's own limit."""
    return openai.Timeout(read or REQUEST_SECONDS, connect=CONNECT_SECONDS)


def bounded_http_client() -> httpx2.Client:
    """The SDK's default HTTP client, with request timeouts and every body capped."""
    return openai.DefaultHttpxClient(
        timeout=request_timeout(), event_hooks={"response": [cap_response_body]}
    )


def cap_response_body(response: Any) -> None:
    """Count the body of `response` as it is read and stop past its cap (a response hook)."""
    is_file = response.request.url.path.endswith("/content")
    if not is_file and response.is_success and not _is_api_answer(response):
        response.close()
        raise not_an_api_answer(response.request, "it is not JSON")
    limit = MAX_FILE_BYTES if is_file else MAX_BODY_BYTES
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        response.close()
        raise _too_large(response, limit)
    response.stream = _capped(response, response.stream, limit)


def _is_api_answer(response: Any) -> bool:
    kind = response.headers.get("content-type", "").lower()
    return "json" in kind or "text/event-stream" in kind  # an answer, or a streamed one


def not_an_api_answer(request: Any, why: str) -> TunelabError:
    """The error for a 2xx answer that cannot be read as OpenAI's API answers (`why`)."""
    return TunelabError(
        "provider_bad_response",
        f"the server at {_origin(request.url)} answered {request.method} {request.url.path} "
        f"with a body tunelab cannot read: {why}.",
        hint="check that the base URL is an OpenAI-compatible API (it usually ends in /v1)",
    )


def _capped(response: Any, stream: Any, limit: int) -> Any:
    """`stream`, raising once more than `limit` bytes have come; of the HTTP library's own
    stream type (httpx or httpx2, whichever the SDK sends through), which it checks."""
    library = sys.modules[type(response).__module__.partition(".")[0]]

    # The base class is known at run time only (the library the SDK's response came from).
    class CappedStream(library.SyncByteStream):  # type: ignore[name-defined]
        def __iter__(self) -> Iterator[bytes]:
            received = 0
            for chunk in stream:
                received += len(chunk)
                if received > limit:
                    stream.close()
                    raise _too_large(response, limit)
                yield chunk

        def close(self) -> None:
            stream.close()

    return CappedStream()


def _too_large(response: Any, limit: int) -> TunelabError:
    url = response.request.url
    return TunelabError(
        "provider_response_too_large",
        f"the server at {_origin(url)} sent more than "
        f"{limit >> 20} MB in answer to {response.request.method} {url.path}; tunelab stopped "
        "reading.",
        hint="check that the base URL is an OpenAI-compatible API",
    )


def _origin(url: Any) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"


def is_read_timeout(err: Exception) -> bool:
    """Whether `err` is a server that accepted a request and then stayed silent."""
    cause = err.__cause__ or err.__context__
    return type(err).__name__ == "APITimeoutError" and type(cause).__name__ in {
        "ReadTimeout",
        "WriteTimeout",
    }
