"""The one JSON shape of every error answer, ``{"error", "status"[, "field"][, "detail"]}``, and its log line.

:func:`error_body` writes the shape; :class:`ErrorShapeMiddleware` rewrites every error answer of the API routes
(BentoML's schema errors, Starlette's 404/405) into it with :func:`normalize_error`, which also strips server file
paths (:func:`without_paths`). Each client error is one INFO line without client data (:func:`log_client_error`).
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any

from starlette.responses import Response

from retention.settings import Settings
from serving.responses import send_json

__all__ = [
    "ERROR_SCHEMA",
    "ErrorShapeMiddleware",
    "configure_logging",
    "error_body",
    "error_response",
    "log_client_error",
    "normalize_error",
    "request_log",
    "send_error",
    "without_paths",
]

request_log = logging.getLogger("retention.requests")
"""One INFO line per client error (:func:`log_client_error`); INFO even where the root logger is at WARNING, as
BentoML sets it, so the line is in the server log (``RETENTION_CLIENT_ERROR_LOG=0`` leaves it at the root's level;
set at start-up by :func:`configure_logging`)."""


def configure_logging(settings: Settings) -> None:
    """At service start: client errors are one INFO line in the server log unless ``client_error_log`` is off."""
    if settings.client_error_log:
        request_log.setLevel(logging.INFO)


def log_client_error(method: str, path: str, status: int, field: str | None = None) -> None:
    """One INFO line per client error: no traceback, no client data (the route, the status and the offending
    field's path or the validator's error type)."""
    request_log.info("client error: %s %s answered %d%s", method, path[:100], status, f" ({field})" if field else "")


def error_body(status: int, message: str, field: str | None = None, detail: Any = None) -> bytes:
    """The one JSON shape of every error answer: ``{"error", "status"[, "field"][, "detail"]}``.

    ``error`` is one readable sentence (it names the field when there is one), ``field`` the path of the
    offending input (``customers[0].transactions[2].timestamp``), ``detail`` the validator's list of problems
    when the body does not match the schema.
    """
    body: dict[str, Any] = {"error": message, "status": status}
    if field:
        body["field"] = field
    if detail:
        body["detail"] = detail
    return json.dumps(body).encode()


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The one shape of every error answer (see error_body).",
    "required": ["error", "status"],
    "additionalProperties": False,
    "properties": {
        "error": {"type": "string", "description": "One readable sentence; starts with the field's path if any"},
        "status": {"type": "integer", "description": "The HTTP status again"},
        "field": {"type": "string", "description": "Path of the offending input: customers[0].transactions[2].amount"},
        "detail": {
            "type": "array",
            "description": "400 only: every problem the schema validator found",
            "items": {
                "type": "object",
                "required": ["type", "loc", "msg", "field"],
                "properties": {
                    "type": {"type": "string"},
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "field": {"type": "string"},
                },
            },
        },
    },
}
"""The OpenAPI schema of :func:`error_body`'s shape."""


def error_response(status: int, message: str, field: str | None = None) -> Response:
    """An endpoint's error answer in :func:`error_body`'s shape."""
    return Response(error_body(status, message, field), status_code=status, media_type="application/json")


async def send_error(send: Any, status: int, message: str) -> None:
    """A middleware's error answer in :func:`error_body`'s shape."""
    await send_json(send, status, error_body(status, message))


def _field_path(loc: Any) -> str:
    """``["customers", 0, "customer_id"]`` -> ``customers[0].customer_id``."""
    path = ""
    for part in loc or ():
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:file://)?(?:/[\w.@+~=-]+){2,}/?")


def without_paths(text: str) -> str:
    """``text`` with each absolute file path replaced by its last part (``/srv/models/7/churn.txt`` -> ``churn.txt``):
    error answers never show the server's file system."""
    return _ABSOLUTE_PATH.sub(lambda m: m[0].rstrip("/").rsplit("/", 1)[-1], text)


def normalize_error(status: int, body: bytes) -> bytes:
    """Rewrite an error body written by BentoML or Starlette into :func:`error_body`'s shape.

    BentoML answers a body that does not match the schema with ``{"error": "1 validation error for Input",
    "detail": [pydantic errors]}``, its own 4xx with a one-element list, and Starlette a 404/405 with plain
    text; this turns each into one readable sentence naming the first offending field.
    """
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip() or HTTPStatus(status).phrase
        return error_body(status, text)
    if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict):
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        return error_body(status, HTTPStatus(status).phrase)
    if "status" in parsed and isinstance(parsed.get("error"), str):
        if not _ABSOLUTE_PATH.search(parsed["error"]):
            return body  # already in shape
        parsed["error"] = without_paths(parsed["error"])
        return json.dumps(parsed).encode()
    detail = parsed.get("detail")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        field = _field_path(first.get("loc"))
        message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid body"))
        if len(detail) > 1:
            message += f" (and {len(detail) - 1} more problem{'s' if len(detail) > 2 else ''} in detail)"
        cleaned = [{k: v for k, v in d.items() if k != "url"} | {"field": _field_path(d.get("loc"))} for d in detail]
        return error_body(status, message, field or None, cleaned)
    return error_body(status, str(parsed.get("error") or HTTPStatus(status).phrase))


class ErrorShapeMiddleware:
    """Every error answer (4xx/5xx) of the ``routes`` (path prefixes) leaves in :func:`error_body`'s shape,
    whoever wrote it."""

    def __init__(self, app: Any, routes: tuple[str, ...]):
        """``routes``: the path prefixes whose error answers are reshaped (the service's API routes)."""
        self.app = app
        self.routes = routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.routes):
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def shaped_send(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held["start"] = message
                return
            if "start" not in held:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                start = held["start"]
                body = normalize_error(start["status"], b"".join(chunks))
                await send_json(send, start["status"], body, list(start.get("headers") or ()))

        await self.app(scope, receive, shaped_send)
