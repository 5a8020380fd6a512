"""Every failure as OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``.

Messages are one sentence naming the fix, never a stack trace. Status codes follow OpenAI's
(400 bad request, 401 key, 404 unknown model or route, 413 too large); 4xx other than 408/409/429
are not retried by the official clients, which is what we want for a request that cannot succeed.
"""
from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import ErrorBody, ErrorResponse

log = logging.getLogger("zhiyin.api")

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error"}


class APIError(Exception):
    """A request we answer with an error; ``message`` says how to fix it."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_ or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return ErrorResponse(error=ErrorBody(message=self.message, type=self.type, param=self.param,
                                             code=self.code)).model_dump()

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def _param(loc: tuple) -> str | None:
    """OpenAI names the offending field with dots and indexes: messages[2].content."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def validation_error(exc: RequestValidationError) -> APIError:
    """The first problem of a malformed body, as one sentence."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return APIError(400, "The request body is not valid JSON; send a JSON object "
                             "(Content-Type: application/json).", code="invalid_json")
    param = _param(tuple(first.get("loc", ())))
    if first.get("type") == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    msg = first.get("msg", "invalid value")
    return APIError(400, f"Invalid value for '{param}': {msg}.", param=param, code="invalid_value")


def install(app: FastAPI) -> None:
    """Route every error FastAPI and Starlette raise through OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return APIError(404, f"No route {request.method} {request.url.path}; see GET /v1/models and "
                                 "docs/api.md for the endpoints.", code="unknown_url").response()
        if exc.status_code == 413:
            from api.security import too_large

            return too_large(exc.detail == "upload").response()
        if exc.status_code == 405:
            return APIError(405, f"{request.method} is not allowed on {request.url.path}.",
                            code="method_not_allowed").response()
        return APIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)  # the trace goes to the log only
        return APIError(500, f"The server failed ({type(exc).__name__}); see its log.").response()


def sse_error(exc: APIError) -> bytes:
    """An error inside a stream that already started (the official client raises it as APIError)."""
    return b"data: " + json.dumps(exc.body(), ensure_ascii=False).encode() + b"\n\n"
