"""The gate in front of every API route: API key, admin key, JSON bodies only, body size limit.

When ``RETENTION_API_KEY`` is set every route but health, metrics and docs (:data:`OPEN_PATHS`) needs it
(``Authorization: Bearer KEY`` or ``X-API-Key: KEY``) and answers 401 without it. ``/admin/*`` also needs
``X-Admin-Key: RETENTION_ADMIN_KEY`` (403 without it, and to everyone when no admin key is set). A POST body must
be JSON (415) and at most ``RETENTION_MAX_BODY_BYTES`` (413). Each refusal is one log line and an answer in the
one error shape (:mod:`serving.http_errors`).
"""

from __future__ import annotations

import hmac
from typing import Any

from pydantic import SecretStr

from retention.settings import get_settings
from serving.http_errors import log_client_error, send_error

__all__ = [
    "ADMIN_ROUTES",
    "NO_ADMIN_KEY",
    "OPEN_PATHS",
    "WRONG_ADMIN_KEY",
    "WRONG_API_KEY",
    "GuardMiddleware",
]

OPEN_PATHS = ("/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/docs", "/static_content")
"""Path prefixes answered without any key or body check (and ``/``)."""
ADMIN_ROUTES = ("/admin/",)
WRONG_API_KEY = "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"
NO_ADMIN_KEY = "admin routes are disabled: set RETENTION_ADMIN_KEY on the server and send it as 'X-Admin-Key'"
WRONG_ADMIN_KEY = "missing or wrong admin key: send RETENTION_ADMIN_KEY as 'X-Admin-Key'"


def _secret(value: SecretStr | None) -> str | None:
    """The key's text, or None when it is unset or empty (``RETENTION_ADMIN_KEY=`` disables the admin routes)."""
    return (value.get_secret_value() if value is not None else "") or None


def _is_json(content_type: bytes) -> bool:
    """``application/json`` or a ``+json`` type, parameters (``; charset=utf-8``) ignored."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class _BodyTooLarge(Exception):
    """The body went over the limit while it was being read (the message is the 413's)."""


class GuardMiddleware:
    """In front of every API route: the API key (when configured), the admin key on ``/admin/*`` (always: the
    routes are refused when none is configured), JSON bodies only (415) and the body size limit (413), counted
    as the bytes arrive, so a chunked body without ``Content-Length`` is cut off at the limit too."""

    def __init__(self, app: Any, max_body_bytes: int | None = None):
        """``max_body_bytes``: the body size limit in bytes (default: the ``max_body_bytes`` setting)."""
        settings = get_settings()
        self.app = app
        self.api_key = _secret(settings.api_key)
        self.admin_key = _secret(settings.admin_key)
        self.max_body = max_body_bytes if max_body_bytes is not None else settings.max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/" or path.startswith(OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        if self.api_key is not None and not _key_matches(_bearer_or_api_key(headers), self.api_key):
            await _refuse(send, scope, 401, WRONG_API_KEY)
            return
        if path.startswith(ADMIN_ROUTES):
            if self.admin_key is None:
                await _refuse(send, scope, 403, NO_ADMIN_KEY)
                return
            if not _key_matches(headers.get(b"x-admin-key", b""), self.admin_key):
                await _refuse(send, scope, 403, WRONG_ADMIN_KEY)
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _refuse(send, scope, 413, self._too_large(int(length)))
            return
        content_type = headers.get(b"content-type")
        if scope.get("method") == "POST" and content_type is not None and not _is_json(content_type):
            media = content_type.split(b";", 1)[0].strip().decode("latin-1")[:80]
            await _refuse(send, scope, 415, f"content type '{media}' is not supported: send 'application/json'")
            return
        if scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
        except _BodyTooLarge as exc:
            await _refuse(send, scope, 413, str(exc))
            return
        if body is None:  # the client went away before sending the whole body
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self, size: int, *, at_least: bool = False) -> str:
        more = "more than " if at_least else ""
        return f"request body of {more}{size} bytes exceeds the limit of {self.max_body} bytes"

    async def _read_body(self, receive: Any) -> bytes | None:
        """The whole body, counted as it arrives; over the limit, stop reading (the rest is never held)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _BodyTooLarge(self._too_large(self.max_body, at_least=True))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the body read by :class:`GuardMiddleware` over in one message, then the rest."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()  # e.g. http.disconnect
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _bearer_or_api_key(headers: dict[bytes, bytes]) -> bytes:
    """The key sent as ``Authorization: Bearer KEY`` (preferred) or ``X-API-Key: KEY``; empty when none."""
    given = headers.get(b"x-api-key", b"")
    auth = headers.get(b"authorization", b"")
    if auth.lower().startswith(b"bearer "):
        given = auth[7:].strip()
    return given


def _key_matches(given: bytes, key: str) -> bool:
    """Whether the key sent is ``key``, compared in constant time."""
    return hmac.compare_digest(given, key.encode())


async def _refuse(send: Any, scope: dict, status: int, message: str) -> None:
    """A client error answered by a middleware: one log line without client data, then the error shape."""
    log_client_error(scope.get("method", ""), scope.get("path", ""), status)
    await send_error(send, status, message)
