"""``/readyz``: 503 with the reason while no model is loaded (in this worker or another one), 200 ``degraded``
while the online store is down.

The service registers its model holder, the workers' reload channel and the online store at start-up
(:func:`watch`); until then both middlewares pass ``/readyz`` on to BentoML (which asks the service's
``__is_ready__``). With several workers, the worker that answers ``/readyz`` also reads the others' states
(:meth:`serving.reload.ReloadChannel.lagging`): 503 while any of them has no model yet or failed to load the
published version.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from serving.http_errors import error_body, normalize_error
from serving.online import ModelHolder
from serving.reload import ReloadChannel
from serving.responses import send_json
from serving.store import ResilientStore

__all__ = ["NOT_LOADED", "ReadinessMiddleware", "StoreReadinessMiddleware", "not_ready_reason", "watch"]

NOT_LOADED = "model is not loaded yet; retry when /readyz answers 200"

_watched: dict[str, Any] = {}
"""The worker's model holder and online store (set by :func:`watch`), read by the middlewares."""


def watch(holder: ModelHolder, store: ResilientStore, channel: ReloadChannel | None = None) -> None:
    """At service start: ``/readyz`` reports on this model holder, the workers of ``channel`` and this online store
    from now on."""
    _watched["holder"] = holder
    _watched["store"] = store
    _watched["channel"] = channel


def not_ready_reason(holder: ModelHolder) -> str:
    """Why no model answers: still loading, or the error of the last failed load (one sentence)."""
    if holder.error is None:
        return NOT_LOADED
    return (
        f"model is not loaded: {holder.reference} failed to load ({holder.error}); the service stays up, fix the"
        " model and POST /admin/reload or send SIGHUP"
    )


class ReadinessMiddleware:
    """``/readyz`` answers 503 in :func:`~serving.http_errors.error_body`'s shape with the reason while this worker
    has no model, or another worker has none or failed to load the published version."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        holder, channel = _watched.get("holder"), _watched.get("channel")
        if scope["type"] == "http" and scope.get("path") == "/readyz" and holder is not None:
            reason = not_ready_reason(holder) if holder.model is None else None
            if reason is None and channel is not None:
                reason = await asyncio.to_thread(channel.lagging)  # reads the other workers' state files
            if reason is not None:
                # normalize_error: the shape (and care) of every error answer of the API routes
                await send_json(send, 503, normalize_error(503, error_body(503, reason)))
                return
        await self.app(scope, receive, send)


class StoreReadinessMiddleware:
    """``/readyz`` answers 200 with ``{"status": "degraded", "store": {...}}`` while the online store is unreachable
    and the model is loaded: inline scoring works, by-id requests answer 503 naming the store."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        store, holder = _watched.get("store"), _watched.get("holder")
        if scope["type"] == "http" and scope.get("path") == "/readyz" and store is not None and holder is not None:
            health = await asyncio.to_thread(store.health)
            if not health["available"] and holder.model is not None:
                body = json.dumps({"status": "degraded", "store": health}).encode()
                await send_json(send, 200, body)
                return
        await self.app(scope, receive, send)
