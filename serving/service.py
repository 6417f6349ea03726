"""The BentoML service for CRM calls: ``/predict``, ``/rank`` and ``/admin/reload``. Thin: logic is in
:mod:`serving.online`.

Start with ``retention serve`` (or ``bentoml serve serving.service:Retention``). The model loads in the
background at start-up, so ``/readyz`` answers 503 until it is loaded and 200 after. When
``RETENTION_API_KEY`` is set every route but health, metrics and docs needs it (``Authorization: Bearer KEY``
or ``X-API-Key: KEY``) and answers 401 without it. ``/admin/reload`` also needs
``X-Admin-Key: RETENTION_ADMIN_KEY`` (403 without it, and to everyone when no admin key is set). ``SIGHUP`` or
``POST /admin/reload`` reloads the model
reference (e.g. a new ``champion``); a version that fails to load leaves the old one serving. Every version is
loaded and scored once in a child process first (:func:`serving.loader.check_in_child`) and its files are checked
against the bundle's manifest, so a damaged file can only crash the child; a champion that cannot load at start-up
leaves the service up (``/livez`` 200) with ``/readyz`` and the prediction routes answering 503 with the reason.

Latency (measured in ``benchmarks/bench_service.py``, results in ``benchmarks/results/service.md``):

- The endpoints are ``async`` (no hop through BentoML's thread pool of size ``threads``). Under concurrent
  load, scoring runs in a thread pool of our own (``RETENTION_SCORING_THREADS``), so the event loop keeps
  answering while LightGBM (which releases the GIL) computes; a small request that arrives alone is scored on
  the loop (no hop); big requests and reloads never run on the loop.
- Responses are written as ready JSON bytes (``json.dumps``, the same bytes BentoML would write):
  BentoML's own path builds a pydantic ``TypeAdapter`` for ``dict[str, Any]`` on every response.
- The tail: with BentoML's defaults every request left objects alive for ``traffic.timeout`` seconds (the
  timeout middleware's timer is never cancelled and holds the request's context, with its OpenTelemetry
  spans), so they were promoted to the oldest GC generation and set off full collections of the whole heap
  (bentoml + mlflow + pandas + lightgbm, ~300k objects) every few thousand requests: pauses of 100-800 ms
  that every in-flight request waited out. :func:`tune_runtime` cancels that timer when the request is done
  (:mod:`serving.bento_patches`: every change to BentoML internals, behind a version guard) and freezes the
  start-up heap (``gc.freeze()``) so a collection never walks it again; access logging is off
  (``RETENTION_ACCESS_LOG=1`` turns it back on); ``/metrics`` stays.

Configuration comes from :func:`retention.settings.get_settings` (``RETENTION_*`` variables): what BentoML's
decorator needs (threads, access log, tracing) is read when this module is imported, the rest when the service
starts. The default online store is the SQLite file under ``RETENTION_HOME``, where ``retention materialize``
writes by default; until it exists, customers sent by id are answered "unknown customer_id".
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import re
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import bentoml
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.responses import Response

from retention.settings import Settings, get_settings
from serving import bento_patches
from serving.bento import default_model_reference
from serving.coalesce import RequestCoalescer
from serving.online import (
    Limits,
    ModelHolder,
    OnlineAnswer,
    OnlineScorer,
    RequestError,
    check_top_k,
)
from serving.store import OnlineStore, ResilientStore, SnapshotInfo, StoreUnavailable, open_store

log = logging.getLogger("retention.service")
request_log = logging.getLogger("retention.requests")
"""One INFO line per client error (:func:`log_client_error`); INFO even where the root logger is at WARNING, as
BentoML sets it, so the line is in the server log (``RETENTION_CLIENT_ERROR_LOG=0`` leaves it at the root's level;
set at start-up by :func:`configure_logging`)."""
OPEN_PATHS = ("/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/docs", "/static_content")
INLINE_MAX_CUSTOMERS = 16
INLINE_MAX_TRANSACTIONS = 500
API_ROUTES = ("/predict", "/rank", "/admin/reload", "/model")
NOT_LOADED = "model is not loaded yet; retry when /readyz answers 200"


def service_config(settings: Settings) -> dict[str, Any]:
    """The BentoML service configuration for ``settings`` (the ``@bentoml.service`` decorator's arguments).

    BentoML's own thread pool gets ``scoring_threads`` threads (at least 1); the service's endpoints are
    ``async`` and score in a pool of their own (see :class:`Retention`).
    """
    return {
        "traffic": {"timeout": 30, "max_concurrency": 256},  # timeout in seconds (504 after it)
        "workers": 1,  # one process: /admin/reload and SIGHUP reload the only copy of the model
        "threads": max(settings.scoring_threads, 1),
        # one log line per request through the logging module costs ~10% of a no-op request's time; CRM
        # calls are counted and timed in /metrics (Prometheus) instead
        "logging": {"access": {"enabled": settings.access_log}},
        # BentoML records OpenTelemetry spans for every request even when nothing samples or exports them (its
        # sampler is "always recording"): four SDK spans per request, ~30% of a no-op request's CPU. The API
        # routes are left out unless RETENTION_TRACING=1 (then configure an exporter with BENTOML_CONFIG).
        **({} if settings.tracing else {"tracing": {"excluded_urls": [f"{r}$" for r in API_ROUTES]}}),
    }


SERVICE_CONFIG: dict[str, Any] = service_config(get_settings())
"""The BentoML service configuration, from the settings read once at import: the ``@bentoml.service`` decorator
needs it then (shared with ``benchmarks/noop_service.py``)."""


def configure_logging(settings: Settings) -> None:
    """At service start: client errors are one INFO line in the server log unless ``client_error_log`` is off."""
    if settings.client_error_log:
        request_log.setLevel(logging.INFO)


class Transaction(BaseModel):
    """One transaction of the customer, or one line of an order, as in the input contract (money in currency
    units, timestamps UTC). Lines sharing a ``transaction_id`` are summed into one order (at its earliest line's
    time); a line's amount is ``amount``, or ``quantity × unit_price`` when it has no ``amount``."""

    model_config = ConfigDict(extra="forbid")
    timestamp: Annotated[str, Field(min_length=1, description="ISO 8601 date or datetime; naive = UTC")]
    amount: (
        Annotated[
            float,
            Field(
                strict=True,  # true/false are not amounts (lax pydantic reads true as 1.0)
                allow_inf_nan=False,
                description="Line or transaction amount, negative for refunds; optional with quantity and unit_price",
            ),
        ]
        | None
    ) = None
    transaction_id: Annotated[str | None, Field(description="Order id: lines sharing it are one order")] = None
    quantity: Annotated[float, Field(strict=True, allow_inf_nan=False, description="Negative for returns")] | None = (
        None
    )
    unit_price: (
        Annotated[float, Field(strict=True, allow_inf_nan=False, description="Amount = quantity × unit_price")] | None
    ) = None
    line_id: Annotated[str | None, Field(description="Line within the order: a repeated one is a duplicate")] = None
    category: str | None = None
    channel: str | None = None


class Customer(BaseModel):
    """A customer by id (features from the online store) or with their own transactions inline."""

    model_config = ConfigDict(extra="forbid")
    customer_id: Annotated[str, Field(min_length=1, description="Opaque id, kept exactly as sent")]
    transactions: list[Transaction] | None = None


class PredictRequest(BaseModel):
    """The body of ``/predict``: unknown top-level fields are a 400, like unknown fields of a customer."""

    model_config = ConfigDict(extra="forbid")
    customers: Annotated[list[Customer], Field(min_length=1)]
    as_of: Annotated[
        str | None, Field(description="ISO 8601 date (YYYY-MM-DD) features are computed at; default today, UTC")
    ] = None


class RankRequest(PredictRequest):
    """The body of ``/rank``: ``/predict``'s and ``top_k``."""

    top_k: Annotated[int, Field(strict=True, ge=1, description="Keep only the first top_k customers")] | None = None


def _secret(value: SecretStr | None) -> str | None:
    """The key's text, or None when it is unset or empty (``RETENTION_ADMIN_KEY=`` disables the admin routes)."""
    return (value.get_secret_value() if value is not None else "") or None


ADMIN_ROUTES = ("/admin/",)
WRONG_API_KEY = "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"
NO_ADMIN_KEY = "admin routes are disabled: set RETENTION_ADMIN_KEY on the server and send it as 'X-Admin-Key'"
WRONG_ADMIN_KEY = "missing or wrong admin key: send RETENTION_ADMIN_KEY as 'X-Admin-Key'"


def _is_json(content_type: bytes) -> bool:
    """``application/json`` or a ``+json`` type, parameters (``; charset=utf-8``) ignored."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class _BodyTooLarge(Exception):
    pass


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
    given = headers.get(b"x-api-key", b"")
    auth = headers.get(b"authorization", b"")
    if auth.lower().startswith(b"bearer "):
        given = auth[7:].strip()
    return given


def _key_matches(given: bytes, key: str) -> bool:
    return hmac.compare_digest(given, key.encode())


async def _refuse(send: Any, scope: dict, status: int, message: str) -> None:
    """A client error answered by a middleware: one log line without client data, then the error shape."""
    log_client_error(scope.get("method", ""), scope.get("path", ""), status)
    await _reply(send, status, message)


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


def _error_response(status: int, message: str, field: str | None = None) -> Response:
    return Response(error_body(status, message, field), status_code=status, media_type="application/json")


async def _reply(send: Any, status: int, message: str) -> None:
    await _send_bytes(send, status, error_body(status, message))


async def _send_bytes(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    kept = [(k, v) for k, v in headers or () if k.lower() not in (b"content-type", b"content-length")]
    kept += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": body})


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
    """Every error answer of the API routes (4xx/5xx) leaves in :func:`error_body`'s shape, whoever wrote it."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(API_ROUTES):
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
                await _send_bytes(send, start["status"], body, list(start.get("headers") or ()))

        await self.app(scope, receive, shaped_send)


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
ERROR_STATUSES: dict[int, str] = {
    400: "The body does not match the schema (invalid JSON, unknown field, wrong type, missing field)",
    401: "API key missing or wrong (when RETENTION_API_KEY is set)",
    403: "Admin key missing or wrong, or no RETENTION_ADMIN_KEY configured",
    405: "Wrong method",
    409: "The new model version failed to load; the old one keeps serving",
    413: "Body over RETENTION_MAX_BODY_BYTES, or too many customers or transactions",
    415: "Content type other than application/json",
    422: "An inline transaction breaks the input contract, or as_of is not an ISO 8601 date",
    500: "Unexpected server error",
    503: "The model is not loaded yet (retry when /readyz answers 200)",
}
ROUTE_ERRORS: dict[str, tuple[int, ...]] = {
    "/predict": (400, 401, 413, 415, 422, 500, 503),
    "/rank": (400, 401, 413, 415, 422, 500, 503),
    "/model": (401, 413, 415, 500, 503),
    "/admin/reload": (401, 403, 409, 413, 415, 500),
}
REQUEST_MODELS: dict[str, type[BaseModel]] = {"/predict": PredictRequest, "/rank": RankRequest}


def _openapi_30(schema: Any) -> Any:
    """A pydantic JSON schema as OpenAPI 3.0 wants it: ``anyOf [X, null]`` -> X with ``nullable: true``."""
    if isinstance(schema, list):
        return [_openapi_30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _openapi_30(v) for k, v in schema.items()}
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out.update(rest[0])
        elif len(rest) == 1:
            out["allOf"] = rest
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


def openapi_document(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document with what the service really answers: the request schemas of our models
    (unknown fields refused, nullable fields marked ``nullable``; BentoML's own flattening drops the ``null``
    of every optional field) and, per route, every error status it can answer in the one error shape."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for path, model in REQUEST_MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = _openapi_30(definition)
        operation = spec.get("paths", {}).get(path, {}).get("post")
        if operation is not None:
            content = {"application/json": {"schema": _openapi_30(schema)}}
            operation["requestBody"] = {"required": True, "content": content}
    for path, statuses in ROUTE_ERRORS.items():
        operation = spec.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        responses = {k: v for k, v in operation.get("responses", {}).items() if str(k).startswith("2")}
        for status in statuses:
            responses[str(status)] = {
                "description": ERROR_STATUSES[status],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        operation["responses"] = responses
    return spec


class OpenAPIMiddleware:
    """Serves ``/docs.json`` as :func:`openapi_document` rewrites BentoML's (built once, then cached)."""

    def __init__(self, app: Any):
        self.app = app
        self.document: bytes | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != "/docs.json" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        if self.document is None:
            held: dict[str, Any] = {}
            chunks: list[bytes] = []

            async def capture(message: Any) -> None:
                if message["type"] == "http.response.start":
                    held["status"] = message["status"]
                else:
                    chunks.append(message.get("body", b""))

            await self.app(scope, receive, capture)
            if held.get("status") != 200:
                await _reply(send, 500, "the OpenAPI document could not be generated")
                return
            self.document = json.dumps(openapi_document(json.loads(b"".join(chunks)))).encode()
        await _send_bytes(send, 200, self.document)


def tune_runtime(service: Any) -> None:
    """Latency fixes for the BentoML worker, the one call at service start (``__init__``; also the benchmark's
    no-op service): :func:`serving.bento_patches.apply` (BentoML internals behind a version guard: the timeout
    timer, client errors as one :func:`log_client_error` line, ``service``'s API methods bound once), then
    :func:`freeze_heap` of the start-up heap (modules, classes, the service), so the cyclic GC only walks objects
    created after start-up. The model is frozen the same way once loaded (``ModelHolder(on_loaded=...)``)."""
    bento_patches.apply(service, log_client_error)
    freeze_heap()


def freeze_heap() -> None:
    """Move every object alive now to the GC's permanent generation (never scanned, never collected)."""
    gc.freeze()


def _json_response(content: dict[str, Any]) -> Response:
    # the bytes BentoML writes for a dict[str, Any] output (json.dumps of the dict), without its per-response
    # pydantic TypeAdapter
    return Response(json.dumps(content).encode("utf-8"), media_type="application/json")


def _open_store(settings: Settings) -> OnlineStore:
    """The online store of ``settings`` (``store_url``, else the SQLite file under ``home``). It never stops the
    start-up: while its server is unreachable, by-id requests answer 503 naming it, /readyz reports it, inline
    customers are scored; it reconnects when the server is back. The default SQLite file is not created here:
    until ``retention materialize`` writes it, every customer sent by id is unknown (:class:`_NotMaterialized`)."""
    url = settings.resolved_store_url
    opener = _open_default_store if settings.store_url is None else open_store
    store = _stores["store"] = ResilientStore(url, opener=opener)
    error = store.health()["error"]
    if error:
        log.warning("starting without the online store %s: %s", store.name, error)
    return store


_stores: dict[str, Any] = {}
"""The worker's online store (set by :func:`_open_store`), read by :class:`StoreReadinessMiddleware`."""


def _open_default_store(url: str) -> OnlineStore:
    """The default SQLite store (``sqlite:///<home>/online_store.db``) if its file exists, else a
    :class:`_NotMaterialized` stand-in: the service creates no file."""
    path = Path(url.removeprefix("sqlite:///"))
    return open_store(url) if path.exists() else _NotMaterialized(url, path)


class _NotMaterialized(OnlineStore):
    """The default SQLite store before ``retention materialize`` has written its file: no snapshot, so every
    customer sent by id is "unknown customer_id"; the first read after the file appears opens it. Read-only."""

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        self._store: OnlineStore | None = None
        self._lock = threading.Lock()

    def read_with_info(self, customer_ids: Sequence[str]) -> tuple[SnapshotInfo | None, dict[str, Any]]:
        store = self._store
        if store is None:
            if not self.path.exists():
                return None, {}
            with self._lock:
                if self._store is None:
                    self._store = open_store(self.url)
                store = self._store
        return store.read_with_info(customer_ids)

    def info(self) -> SnapshotInfo | None:
        return self.read_with_info(())[0]

    def write_snapshot(self, features: Any, *, as_of: Any, feature_columns: Sequence[str]) -> SnapshotInfo:
        raise RuntimeError("the service does not write the online store: run `retention materialize`")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class StoreReadinessMiddleware:
    """``/readyz`` answers 200 with ``{"status": "degraded", "store": {...}}`` while the online store is unreachable
    and the model is loaded: inline scoring works, by-id requests answer 503 naming the store."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        store, holder = _stores.get("store"), _current.get("holder")
        if scope["type"] == "http" and scope.get("path") == "/readyz" and store is not None and holder is not None:
            health = await asyncio.to_thread(store.health)
            if not health["available"] and holder.model is not None:
                body = json.dumps({"status": "degraded", "store": health}).encode()
                await _send_bytes(send, 200, body)
                return
        await self.app(scope, receive, send)


_current: dict[str, ModelHolder] = {}
"""The worker's model holder (set by the service's ``__init__``), read by :class:`ReadinessMiddleware`."""


def not_ready_reason(holder: ModelHolder) -> str:
    """Why no model answers: still loading, or the error of the last failed load (one sentence)."""
    if holder.error is None:
        return NOT_LOADED
    return (
        f"model is not loaded: {holder.reference} failed to load ({holder.error}); the service stays up, fix the"
        " model and POST /admin/reload or send SIGHUP"
    )


class ReadinessMiddleware:
    """``/readyz`` answers 503 in :func:`error_body`'s shape with the reason while no model is loaded."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        holder = _current.get("holder")
        if scope["type"] == "http" and scope.get("path") == "/readyz" and holder is not None and holder.model is None:
            # normalize_error: the shape (and care) of every error answer of the API routes
            await _send_bytes(send, 503, normalize_error(503, error_body(503, not_ready_reason(holder))))
            return
        await self.app(scope, receive, send)


@bentoml.service(name="retention", **SERVICE_CONFIG)
class Retention:
    """Churn probability, expected value, value at risk, tier, segment and reasons per customer."""

    def __init__(self) -> None:
        """Start the service from :func:`get_settings`: model reference, online store, request limits and
        ``scoring_threads`` scoring threads (0: every request is scored on the event loop)."""
        settings = get_settings()
        configure_logging(settings)
        self.holder = ModelHolder(default_model_reference(settings), on_loaded=freeze_heap)
        _current["holder"] = self.holder
        self.scorer = OnlineScorer(self.holder, _open_store(settings), Limits.from_env())
        threads = settings.scoring_threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="retention-score") if threads > 0 else None
        self._coalescer = RequestCoalescer(self.scorer, self._pool) if self._pool is not None else None
        tune_runtime(self)
        self.holder.load_in_background()
        with contextlib.suppress(ValueError):  # not the main thread (in-process tests): reload by admin call only
            signal.signal(signal.SIGHUP, lambda *_: self.holder.load_in_background())

    async def __is_ready__(self) -> bool:  # async: BentoML awaits it instead of hopping to a thread
        return self.scorer.ready

    def _on_loop(self, customers: list[dict[str, Any]]) -> bool:
        """Score on the event loop: when there is no pool, or for a small request while no other request is in
        flight (a thread hop would only add latency: there is nothing to overlap with)."""
        if self._pool is None:
            return True
        if bento_patches.requests_in_flight() != 1 or len(customers) > INLINE_MAX_CUSTOMERS:
            return False
        return sum(len(c.get("transactions") or ()) for c in customers) <= INLINE_MAX_TRANSACTIONS

    async def _predict(self, customers: list[dict[str, Any]], as_of: str | None) -> OnlineAnswer:
        """The scored answer: alone on the loop, merged with concurrent by-id requests, or in the pool."""
        request_as_of = self.scorer.check(customers, as_of)
        if self._on_loop(customers):
            return self.scorer.score_checked(customers, request_as_of)
        if self._coalescer is not None and all(c.get("transactions") is None for c in customers):
            return await self._coalescer.predict(customers, request_as_of)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.scorer.score_checked, customers, request_as_of)

    async def _answer(
        self, customers: list[dict[str, Any]], as_of: str | None, top_k: int | None = None, *, ranked: bool = False
    ) -> Response:
        if not self.scorer.ready:
            return _error_response(503, not_ready_reason(self.holder))
        try:
            if ranked:
                check_top_k(top_k)
            answer = await self._predict(customers, as_of)
        except StoreUnavailable as exc:  # by-id customers need the online store: 503 naming it, no traceback
            log.warning("%s", exc)
            return _error_response(503, str(exc))
        except RequestError as exc:  # answered here: BentoML would log a traceback for each client error
            log_client_error("POST", "/rank" if ranked else "/predict", exc.status, exc.field)
            return _error_response(exc.status, str(exc), exc.field)
        return _json_response(answer.rank_body(top_k) if ranked else answer.predict_body())

    @bentoml.api(input_spec=PredictRequest)
    async def predict(
        self,
        customers: Annotated[list[Customer], Field(min_length=1)],
        as_of: str | None = None,
    ) -> dict[str, Any]:
        """Score customers in request order; unknown ids get an ``error`` entry instead of failing the request."""
        return await self._answer([c.model_dump(exclude_none=True) for c in customers], as_of)

    @bentoml.api(input_spec=RankRequest)
    async def rank(
        self,
        customers: Annotated[list[Customer], Field(min_length=1)],
        as_of: str | None = None,
        top_k: Annotated[int, Field(ge=1)] | None = None,
    ) -> dict[str, Any]:
        """Score and sort by value at risk (retention priority), optionally only the ``top_k`` first."""
        payload = [c.model_dump(exclude_none=True) for c in customers]
        return await self._answer(payload, as_of, top_k, ranked=True)

    @bentoml.api(route="/admin/reload")
    async def reload(self) -> dict[str, Any]:
        """Reload the model reference now; on failure the old version keeps serving and the error is returned."""
        previous = self.holder.model.version if self.holder.model else None
        try:
            model = await asyncio.to_thread(self.holder.load)  # a download: never on the event loop
        except Exception as exc:
            log.warning("reload of %s failed, version %s keeps serving: %s", self.holder.reference, previous, exc)
            return _error_response(409, f"reload failed, version {previous} keeps serving: {exc}")
        return _json_response({"model_version": model.version, "previous_version": previous})

    @bentoml.api(route="/model")
    async def model_info(self) -> dict[str, Any]:
        """Which model answers: version, horizon, training as-of date, tiers."""
        if self.holder.model is None:
            return _error_response(503, not_ready_reason(self.holder))
        return _json_response(self.holder.model.describe())


Retention.add_asgi_middleware(ErrorShapeMiddleware)
Retention.add_asgi_middleware(GuardMiddleware)
Retention.add_asgi_middleware(ReadinessMiddleware)
Retention.add_asgi_middleware(StoreReadinessMiddleware)
Retention.add_asgi_middleware(OpenAPIMiddleware)
