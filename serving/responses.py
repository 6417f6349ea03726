"""JSON answers as ready bytes, the one way the service writes a response body.

The endpoints return :func:`json_response` (the bytes BentoML would write for a ``dict[str, Any]`` output, without
its per-response pydantic ``TypeAdapter``); the ASGI middlewares answer with :func:`send_json`.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

__all__ = ["json_response", "send_json"]


def json_response(content: dict[str, Any]) -> Response:
    """``content`` as a 200 JSON response: ``json.dumps`` of the dict, the bytes BentoML writes for a dict output."""
    return Response(json.dumps(content).encode("utf-8"), media_type="application/json")


async def send_json(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send ``body`` (JSON bytes) as the whole ASGI response, keeping ``headers`` but their content type and length."""
    kept = [(k, v) for k, v in headers or () if k.lower() not in (b"content-type", b"content-length")]
    kept += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": body})
