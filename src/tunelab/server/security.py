"""Request guards shared by every route of the server, the API and the web UI alike.

A server on loopback with no key is still reachable by any web page the user opens: the
browser sends a cross-site form post or `fetch` without asking (multipart uploads and
empty-bodied POSTs are CORS "simple requests", sent before any preflight). Browsers mark
every such request with `Origin` (and `Sec-Fetch-Site`), so `CrossSiteGuard` refuses a
state-changing request that says it comes from another site, and requires a JSON content
type where a route takes JSON (a cross-site page cannot send one without a preflight, which
this server never approves).

`BodyLimit` counts a request's body as it arrives and stops reading at the limit, so a
chunked upload without `Content-Length` never reaches the disk past the limit plus one chunk.

Both are plain ASGI middleware: they wrap any app, and refuse in OpenAI's error envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from tunelab.server.errors import ApiError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# `none`: typed into the address bar or sent by a non-browser client; `same-origin`: our pages.
SAME_SITE_FETCH = frozenset({"same-origin", "none"})
JSON_TYPES = ("application/json",)


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class CrossSiteGuard:
    """Refuse (403) state-changing requests from another site; require JSON where it is due.

    `accepts_host(name)` says whether this server answers to a host name (the Host
    allowlist): an `Origin` naming one it accepts is ours. `takes_json(method, path)` says
    whether a route reads a JSON body; such a request with a body and another content type
    is refused (415).
    """

    def __init__(
        self,
        app,
        accepts_host: Callable[[str], bool],
        takes_json: Callable[[str, str], bool] = lambda method, path: False,
    ) -> None:
        self.app, self.takes_json, self.accepts_host = app, takes_json, accepts_host

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            refusal = self.refusal(scope["method"], scope["path"], _headers(scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, method: str, path: str, headers: dict[str, str]):
        """The error response for this request, or None when it may go on."""
        fetch_site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        if fetch_site is not None and fetch_site.lower() not in SAME_SITE_FETCH:
            return _cross_site(f"Sec-Fetch-Site: {fetch_site}")
        if origin is not None and not self._ours(origin):
            return _cross_site(f"Origin: {origin}")
        if self.takes_json(method, path) and _has_body(headers):
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in JSON_TYPES:
                return ApiError(
                    415,
                    f"This route takes a JSON body (Content-Type: application/json); "
                    f"got {kind or 'no content type'!r}.",
                    code="unsupported_media_type",
                ).response()
        return None

    def _ours(self, origin: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and self.accepts_host(parts.hostname or "")


def _cross_site(evidence: str):
    return ApiError(
        403,
        f"Cross-site request refused ({evidence}): this server changes state only for "
        "requests from its own pages or from clients that are not browsers.",
        code="cross_site_request",
    ).response()


def _has_body(headers: dict[str, str]) -> bool:
    length = headers.get("content-length")
    return "transfer-encoding" in headers or (length is not None and length.strip() != "0")


def api_takes_json(method: str, path: str) -> bool:
    """The API's JSON routes: every POST under /v1 except the multipart upload."""
    return method == "POST" and path.startswith("/v1/") and path.rstrip("/") != "/v1/files"


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"The request is larger than this server's limit ({limit / (1 << 20):g} MB).",
            code="file_too_large",
        )


class BodyLimit:
    """Stop reading a request body past `limit` bytes (413), whatever its headers say.

    The count is kept as chunks arrive, so nothing downstream (the multipart parser's
    spool, a staging file) ever holds more than the limit plus one chunk. `BodyTooLarge` is
    an `ApiError`: the app's handler answers it in OpenAI's envelope; when it surfaces
    here (outside the app), this middleware answers it.
    """

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _headers(scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        received, started = 0, False

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:  # a route that answered before reading it all: nothing more to say
                return
            await _too_large(self.limit)(scope, receive, send)


def _too_large(limit: int):
    err = BodyTooLarge(limit)
    err.headers = {"Connection": "close"}
    return err.response()
