"""Logging in to the studio when the server has an API key.

The login form takes the key once and answers with a session cookie (HttpOnly, so no script
reads it; SameSite=Strict, so no other site's page sends it; Secure behind HTTPS). Sessions
live in the server's memory: a restart logs everyone out. Without a key (loopback only, see
`tunelab serve`) there is nothing to log in to. Failed logins are slowed down per client
address (`login_throttle.py`): past a few, each closes the form to that address for a
doubling delay (429 with `Retry-After`).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request

from tunelab.server.ui.web import page, see_other

router = APIRouter()
COOKIE = "tunelab_session"
# Reached without a session: the login form itself and the files it needs.
OPEN_PATHS = ("/login", "/static/", "/health")


class Sessions:
    def __init__(self) -> None:
        self._tokens: set[str] = set()

    def open(self) -> str:
        token = secrets.token_urlsafe(32)
        self._tokens.add(token)
        return token

    def valid(self, token: str | None) -> bool:
        return bool(token) and any(hmac.compare_digest(token, t) for t in self._tokens)

    def close(self, token: str | None) -> None:
        self._tokens.discard(token or "")


def is_open(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in OPEN_PATHS)


def logged_in(request: Request) -> bool:
    return request.app.state.sessions.valid(request.cookies.get(COOKIE))


@router.get("/login")
def login_form(request: Request, next: str = "/"):
    if not request.app.state.config.api_key:
        return see_other("/")
    return page(request, "login.html", next=_local(next), error=None)


@router.post("/login")
async def login(request: Request):
    form = await request.form()
    key = str(form.get("api_key") or "")
    expected = request.app.state.config.api_key or ""
    target = _local(str(form.get("next") or "/"))
    throttle, address = request.app.state.login_throttle, _address(request)
    wait = throttle.wait_s(address)
    if wait:  # refused before the key is compared: a guess in the delay learns nothing
        return _login_refused(request, target, 429, f"Too many failed logins: wait {wait} s.", wait)
    if not expected or not hmac.compare_digest(key.encode(), expected.encode()):
        throttle.failed(address)
        return _login_refused(request, target, 401, "That is not this server's API key.")
    throttle.succeeded(address)
    response = see_other(target)
    response.set_cookie(
        COOKIE,
        request.app.state.sessions.open(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request):
    request.app.state.sessions.close(request.cookies.get(COOKIE))
    response = see_other("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


def _login_refused(request: Request, target: str, status: int, error: str, wait: int = 0):
    response = page(request, "login.html", status_code=status, next=target, error=error)
    if wait:
        response.headers["Retry-After"] = str(wait)
    return response


def _address(request: Request) -> str:
    """The client's address, as the connection gives it (a proxy's own, behind one)."""
    return request.client.host if request.client else "unknown"


def _local(target: str) -> str:
    """Only a path on this server: `next` must not send the browser elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"
