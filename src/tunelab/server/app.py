"""The FastAPI application: OpenAI's fine-tuning, files, models and chat routes under `/v1`,
and tunelab studio (the web UI, `tunelab.server.ui`) at `/`.

Security first: requests whose Host header is not an allowed name are refused (a web page
cannot reach this server through DNS rebinding); when an API key is set, every request must
carry it as a bearer token (a studio page may instead carry the session cookie its login
form set); state-changing requests from another site are refused, and JSON routes take only
JSON (`security.CrossSiteGuard`); a body is counted as it arrives and refused with 413 past
the size limit (`security.BodyLimit`), before anything is written. Every error, the
framework's own 404, 405 and malformed bodies included, is answered in OpenAI's envelope.
Training never runs in a request: jobs go to the registry and the local worker.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab import __version__
from tunelab.errors import TunelabError
from tunelab.server import routes_files, routes_graders, routes_inference, routes_jobs
from tunelab.server.api_docs import render_api_reference
from tunelab.server.errors import (
    ApiError,
    on_api_error,
    on_http_error,
    on_tunelab_error,
    on_unexpected_error,
    on_validation_error,
)
from tunelab.server.inference import InferenceService
from tunelab.server.security import BodyLimit, CrossSiteGuard, api_takes_json
from tunelab.server.ui import install_ui
from tunelab.server.ui.auth import Sessions, is_open, logged_in
from tunelab.server.ui.login_throttle import LoginThrottle

DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024 * 1024
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    allowed_hosts: tuple[str, ...] = ()  # extra Host names to accept (e.g. a DNS name)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    start_worker: bool = True  # start a local worker when a job is created
    model_memory_bytes: int | None = None  # budget for cached models (None: automatic)
    max_batch_size: int = 8
    max_adapters: int | None = None  # LoRA adapters one base holds (None: as memory allows)
    backend: str = "torch"  # the local inference backend: torch, auto or llamacpp
    max_pending_requests: int = 64
    data_dir: Path | None = None  # the studio may open files under it by path
    models: tuple[str, ...] = ()  # what clients may name besides registry and bundled models
    allow_any_model: bool = False  # clients may name any directory, Hub id or URL
    extra: dict = field(default_factory=dict)

    def host_names(self) -> set[str]:
        names = {*LOOPBACK_NAMES, *(h.lower() for h in self.allowed_hosts)}
        if self.host not in WILDCARD_HOSTS:
            names.add(self.host.lower())
        return names

    def accepts_host(self, name: str) -> bool:
        """Whether a request whose Host header names `name` is for this server.

        The names above, and, on a wildcard bind with an API key, any IP address: that is how
        other machines reach it (the machine's own addresses, or a forwarded port's). DNS
        rebinding needs a name that a page's own origin can share, never an address typed as
        one, and every request must carry the key anyway.
        """
        name = name.lower()
        if name in self.host_names():
            return True
        return self.host in WILDCARD_HOSTS and bool(self.api_key) and _is_address(name)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` and listening, made before anything says the server is
    up: a port already in use is this error, not a line after "tunelab API on ..."."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as err:
        busy = err.errno == errno.EADDRINUSE
        raise TunelabError(
            "port_in_use" if busy else "cannot_listen",
            f"cannot listen on {host} port {port}: "
            f"{'another server is using it' if busy else err.strerror or err}.",
            hint="choose another --port, or stop the server that has it"
            if busy
            else "choose an address of this machine with --host (127.0.0.1 by default)",
            exit_code=3,
        ) from None


def create_app(config: ServerConfig | None = None) -> FastAPI:

    config = config or ServerConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.inference = InferenceService(
            memory_budget_bytes=config.model_memory_bytes,
            max_batch_size=config.max_batch_size,
            max_pending=config.max_pending_requests,
            max_adapters=config.max_adapters,
            backend=config.backend,
        )
        try:
            yield
        finally:
            app.state.inference.close()

    app = FastAPI(
        title="tunelab",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )
    app.state.config = config
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(TunelabError, on_tunelab_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    # Outermost last: Host and key first, then the cross-site check, then the body count.
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes + 64 * 1024)
    app.add_middleware(CrossSiteGuard, accepts_host=config.accepts_host, takes_json=api_takes_json)
    app.middleware("http")(_guard(config))
    app.include_router(routes_files.router, prefix="/v1")
    app.include_router(routes_jobs.router, prefix="/v1")
    app.include_router(routes_inference.router, prefix="/v1")
    app.include_router(routes_graders.router, prefix="/v1")
    app.state.sessions = Sessions()
    app.state.login_throttle = LoginThrottle()
    install_ui(app)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """The API reference, rendered here from the schema: no CDN, works offline."""

        return HTMLResponse(render_api_reference(app.openapi()))

    return app


def _guard(config: ServerConfig):
    """Host allowlist and bearer-token check, before anything else."""

    async def guard(request: Request, call_next):
        host = _host_name(request.headers.get("host", ""))
        if not config.accepts_host(host):
            message = f"Host {host!r} is not allowed by this server."
            return ApiError(400, message, code="invalid_host").response()
        if config.api_key and not _authorized(request, config.api_key):
            return _unauthorized(request)
        return await call_next(request)

    return guard


def _authorized(request: Request, api_key: str) -> bool:
    """The bearer token (API clients), or a studio session (browsers, on the studio's pages)."""
    path = request.url.path
    if is_open(path):
        return True
    sent = request.headers.get("authorization", "")
    token = sent[7:] if sent.lower().startswith("bearer ") else ""
    if hmac.compare_digest(token.encode(), api_key.encode()):
        return True
    return not path.startswith("/v1/") and logged_in(request)


def _unauthorized(request: Request):
    if request.method == "GET" and not request.url.path.startswith("/v1/"):
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return RedirectResponse(f"/login?next={target}", status_code=303)
    message = "Incorrect or missing API key (a bearer token)."
    return ApiError(401, message, code="invalid_api_key").response()


def _host_name(header: str) -> str:
    """The name part of a Host header: `[::1]:8000` → `::1`, `localhost:8000` → `localhost`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header
