"""Errors in OpenAI's envelope, with the status codes that make the `openai` SDK raise the
matching exception (`BadRequestError` 400, `AuthenticationError` 401, `NotFoundError` 404,
`ConflictError` 409, `UnprocessableEntityError` 422, `RateLimitError` 429, ...).

Routes raise `ApiError` (or let a `TunelabError` through: its code picks the status).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.errors import TunelabError

# TunelabError codes that are not the client's malformed request.
STATUS_BY_CODE = {
    "job_not_found": 404,
    "file_not_found": 404,
    "model_not_found": 404,
    "unknown_model": 404,
    "job_finished": 409,
    "job_not_running": 409,
    "job_not_resumable": 409,
    "job_active": 409,
    "job_changed": 409,
    "missing_api_key": 401,
    "provider_auth_failed": 401,
    "provider_rate_limited": 429,
    "server_busy": 429,
    "server_shutting_down": 503,
    "file_too_large": 413,
    "provider_unavailable": 503,
    # The server's own storage cannot be written: not the client's fault, and not a bug.
    "home_read_only": 503,
    "registry_read_only": 503,
    "not_writable": 503,
    "provider_unreachable": 503,
}
TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class ApiError(Exception):
    """An HTTP error to return in OpenAI's envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The error as its response: OpenAI's envelope, with the error's status and headers."""
        body = envelope(self.status, self.message, self.code, self.param)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def shutting_down() -> ApiError:
    return ApiError(503, "The server is shutting down.", code="server_shutting_down")


def envelope(status: int, message: str, code: str | None, param: str | None) -> dict:
    kind = TYPE_BY_STATUS.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def on_api_error(request: Request, err: ApiError) -> JSONResponse:
    return err.response()


async def on_tunelab_error(request: Request, err: TunelabError) -> JSONResponse:
    status = STATUS_BY_CODE.get(err.code, 400)
    message = err.message + (f" ({err.hint})" if err.hint else "")
    if err.path and err.line:
        message = f"line {err.line}: {message}"
    return ApiError(status, message, code=err.code).response()


async def on_validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    """A request body that does not fit the schema: 400, naming the first bad field."""
    problems = err.errors()
    first = problems[0] if problems else {}
    param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in problem.get('loc', ())[1:]) or 'body'}: {problem.get('msg')}"
        for problem in problems
    )
    return ApiError(
        400, message or "invalid request", code="invalid_request", param=param
    ).response()


async def on_http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    """The framework's own errors (no such route, wrong method, a malformed multipart body)."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "invalid_request")
    message = err.detail if isinstance(err.detail, str) else str(err.detail)
    if err.status_code == 404 and message == "Not Found":
        message = f"No route {request.method} {request.url.path} on this server."
    elif err.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    headers = getattr(err, "headers", None)
    return ApiError(err.status_code, message, code=code, headers=headers).response()


async def on_unexpected_error(request: Request, err: Exception) -> JSONResponse:
    """A bug in tunelab: the client gets the envelope; the traceback goes to the server log."""
    message = "The server had an error while processing your request."
    return ApiError(500, message, code="server_error").response()
