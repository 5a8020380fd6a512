"""Who may call the API and how much they may send.

- Loopback by default; any other address needs an API key (``api_key`` / ``ZHIYIN_API_KEY``), checked
  as a bearer token in constant time (``hmac.compare_digest``) on every /v1 route.
- Bodies are capped before they are read whole: a chat body at ``api_max_body_bytes``, an audio upload
  at ``api_max_upload_bytes``; the declared Content-Length first, then the bytes actually received (a
  chunked upload declares none). Starlette's own RequestBodyLimitMiddleware answers a declared
  oversize in plain text whatever the app says, hence this small one, answering in OpenAI's shape.
- No route takes a file path: audio comes in as uploaded bytes and goes out as bytes.
"""
from __future__ import annotations

import hmac
import ipaddress
import json

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import APIError

UPLOAD_PATHS = ("/v1/audio/transcriptions",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def refuse_open_without_key(host: str, api_key: str) -> None:
    """Refuse to serve beyond loopback without a key (raises SystemExit with the fix)."""
    if not is_loopback(host) and not api_key:
        raise SystemExit(
            f"error: refusing to listen on {host} without an API key. Set one with "
            "`export ZHIYIN_API_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')` "
            "(or api_key in settings.toml), or listen on 127.0.0.1."
        )


def check_key(request: Request) -> None:
    """A FastAPI dependency: the bearer token must equal the configured key (when one is set)."""
    expected: str = request.app.state.zhiyin.settings.api_key
    if not expected:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise APIError(401, "Missing API key: send `Authorization: Bearer <key>` (the openai client's api_key).",
                       code="invalid_api_key")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise APIError(401, "Incorrect API key provided; use the key set in ZHIYIN_API_KEY on the server.",
                       code="invalid_api_key")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit; FastAPI re-raises it and errors.py renders it."""

    def __init__(self, upload: bool) -> None:
        super().__init__(413, "upload" if upload else "body")


def too_large(upload: bool) -> APIError:
    what, setting = ("audio upload", "api_max_upload_bytes") if upload else ("request body", "api_max_body_bytes")
    return APIError(413, f"The {what} is too large; send less (the server's {setting}).", code="request_too_large")


class BodyLimit:
    """ASGI middleware: a body over its route's limit is answered 413 before the app reads it whole."""

    def __init__(self, app: ASGIApp, max_body: int, max_upload: int) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["path"] in UPLOAD_PATHS
        limit = self.max_upload if upload else self.max_body
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            body = json.dumps(too_large(upload).body()).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(upload)
            return message

        await self.app(scope, counted, send)
