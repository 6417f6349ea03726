"""A no-op BentoML service on the same server stack as :mod:`serving.service`, the benchmark's baseline.

``POST /noop`` answers ``{"ok": true}`` through the same BentoML configuration (:data:`SERVICE_CONFIG`),
start-up tuning (:func:`tune_runtime`), middleware (API key / body size) and response path as ``/predict``,
with the same modules imported, so the difference to ``/predict`` is the scoring itself.

``NOOP_STACK=defaults`` serves a no-op with BentoML's default configuration and a plain ``def`` endpoint
instead (what the stack costs before the fixes).
"""

from __future__ import annotations

import os
from typing import Any

import bentoml

if os.environ.get("NOOP_STACK") == "defaults":

    @bentoml.service(name="noop")
    class Noop:
        @bentoml.api
        def noop(self) -> dict[str, Any]:
            return {"ok": True}

else:
    from serving.guard import GuardMiddleware
    from serving.responses import json_response
    from serving.service import SERVICE_CONFIG
    from serving.tuning import tune_runtime

    config = dict(SERVICE_CONFIG)
    if "tracing" in config:  # the service leaves its API routes out of tracing: the no-op route too
        config["tracing"] = {"excluded_urls": [*config["tracing"]["excluded_urls"], "/noop$"]}

    @bentoml.service(name="noop", **config)
    class Noop:
        def __init__(self) -> None:
            tune_runtime(self)

        @bentoml.api
        async def noop(self) -> dict[str, Any]:
            return json_response({"ok": True})

    Noop.add_asgi_middleware(GuardMiddleware)
