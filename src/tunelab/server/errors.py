"""Errors in OpenAI's envelope, with the status codes that make the `openai` SDK raise the
matching exception (`BadRequestError` 400, `AuthenticationError` 401, `NotFoundError` 404,
`ConflictError` 409, `UnprocessableEntityError` 422, `RateLimitError` 429, ...).

Routes raise `ApiError` (or let a `TunelabError` through: its code picks the status). Every
400 carries a stable code, and `param` names the field at fault as OpenAI writes it, by its
whole path in the request (`messages[1].content[0].text`). A request the schema refuses gets
OpenAI's codes for it: `missing_required_parameter`, `invalid_type`, `invalid_value`, and
`unsupported_parameter` for a field no route takes (as `chat_fields` refuses nested ones).
"""

from __future__ import annotations

from collections.abc import Sequence

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
        code: str,  # stable: what a client branches on
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


# Pydantic's error types whose last `loc` part names a field the request does not hold.
FIELD_PROBLEMS = {
    "missing": "missing_required_parameter",
    "extra_forbidden": "unsupported_parameter",
}


async def on_validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    """A request that does not fit the schema: 400 with OpenAI's code for its first problem
    and `param` naming the field, both as a route that checks the field itself writes them."""
    problems = err.errors()
    if not problems:
        return ApiError(400, "invalid request", code="invalid_value").response()
    first = _most_specific(problems, err.body)
    code, param = validation_code(first["type"]), _param_of(first, err.body)
    if code == "unsupported_parameter":
        return unsupported_parameter(param, "tunelab does not implement it").response()
    message = "; ".join(
        f"{_param_of(problem, err.body) or 'body'}: {problem.get('msg')}" for problem in problems
    )
    return ApiError(400, message, code=code, param=param).response()


def validation_code(problem_type: str) -> str:
    """OpenAI's error code for one of pydantic's error types."""
    if problem_type == "json_invalid":
        return "invalid_json"
    if problem_type in FIELD_PROBLEMS:
        return FIELD_PROBLEMS[problem_type]
    if problem_type.endswith(("_type", "_parsing")) or problem_type == "int_from_float":
        return "invalid_type"
    return "invalid_value"  # out of range, not one of the values, too long, a pattern, ...


def _most_specific(problems: Sequence[dict], body: object) -> dict:
    """The first problem, or a deeper one inside the same field: where the value may be of
    several kinds (a string or a list of parts), the kind that got furthest says what is
    wrong (`messages[0].content[0].text`, not `messages[0].content`)."""
    field = _param_of(problems[0], body) or ""
    inside = [problem for problem in problems if _within(_param_of(problem, body) or "", field)]
    return max(inside, key=lambda problem: len(problem.get("loc", ())))


def _within(path: str, field: str) -> bool:
    """Whether `path` is `field` itself or a field or item inside it."""
    return path == field or path.startswith((f"{field}.", f"{field}["))


def _param_of(problem: dict, body: object) -> str | None:
    """The problem's field as a path in the request, without the union members pydantic's
    `loc` names besides the fields (`content.str`, `tool_choice.NamedToolChoice`)."""
    source, *parts = problem.get("loc", ()) or ("body",)
    if problem.get("type") == "json_invalid":
        return None  # the body is no JSON: its `loc` is a position in the text
    if source != "body":
        return param_path(parts)  # a query or path parameter
    named: list[str | int] = []
    value = body
    for index, part in enumerate(parts):
        missing_here = index == len(parts) - 1 and problem.get("type") in FIELD_PROBLEMS
        if isinstance(value, dict) and (part in value or missing_here):
            named.append(part)
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            named.append(part)
            value = value[part]
    return param_path(named)


def param_path(parts: Sequence[str | int]) -> str | None:
    """A field's path in the request as OpenAI writes it: `messages[1].content[0].text`."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or None


def unsupported_parameter(param: str | None, reason: str) -> ApiError:
    """The refusal of a field tunelab does not take, at `param`, saying why."""
    return ApiError(
        400,
        f"Unsupported parameter: `{param}` ({reason}).",
        code="unsupported_parameter",
        param=param,
    )


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
