"""The OpenAPI document at ``/docs.json``: BentoML's, corrected to what the service really accepts and answers."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from serving.http_errors import ERROR_SCHEMA, send_error
from serving.responses import send_json
from serving.schemas import (
    BatchJobRequest,
    BatchSubmitRequest,
    PlanRequest,
    PlanResponse,
    PredictRequest,
    PredictResponse,
    RankRequest,
    RankResponse,
)

__all__ = [
    "ERROR_STATUSES",
    "REQUEST_MODELS",
    "RESPONSE_MODELS",
    "ROUTE_ERRORS",
    "ROUTE_SUCCESSES",
    "OpenAPIMiddleware",
    "openapi_document",
]

ERROR_STATUSES: dict[int, str] = {
    400: "The body does not match the schema (invalid JSON, unknown field, wrong type, missing field)",
    401: "API key missing or wrong (when RETENTION_API_KEY is set)",
    403: "Admin key missing or wrong, or no RETENTION_ADMIN_KEY configured; /batch: tasks disabled (no"
    " RETENTION_BATCH_ROOT), a path outside the batch root, or a SQL URL without RETENTION_BATCH_SQL",
    404: "/batch: no job with this id",
    405: "Wrong method",
    409: "The new model version failed to load; the old one keeps serving; /batch/result: the job is not done",
    413: "Body over RETENTION_MAX_BODY_BYTES, or too many customers or transactions",
    415: "Content type other than application/json",
    422: "An inline transaction breaks the input contract, or as_of is not an ISO 8601 date; /plan: a repeated"
    " customer id, an offer or economics field out of range; /batch: a path with"
    " '..', a missing source, a destination not .parquet/.csv, a malformed job id",
    500: "Unexpected server error",
    503: "The model is not loaded yet (retry when /readyz answers 200)",
}
"""What each error status means, the description of its response in the document."""
ROUTE_ERRORS: dict[str, tuple[int, ...]] = {
    "/predict": (400, 401, 413, 415, 422, 500, 503),
    "/rank": (400, 401, 413, 415, 422, 500, 503),
    "/plan": (400, 401, 413, 415, 422, 500, 503),
    "/model": (401, 413, 415, 500, 503),
    "/admin/reload": (401, 403, 409, 413, 415, 500),
    "/batch/submit": (400, 401, 403, 413, 415, 422, 500, 503),
    "/batch/status": (400, 401, 403, 404, 413, 415, 422, 500),
    "/batch/result": (400, 401, 403, 404, 409, 413, 415, 422, 500),
}
"""The error statuses each route can answer."""
ROUTE_SUCCESSES: dict[str, dict[int, str]] = {
    "/batch/submit": {
        200: "The identical job already finished: its final record (the summary is at /batch/result)",
        202: "Accepted: the job started now or is already running; its record (job_id, status, progress) and a"
        " 'poll' hint (POST /batch/status with the job_id)",
    },
}
"""The success statuses of the routes that answer more than 200, each with its meaning."""
REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/predict": PredictRequest,
    "/rank": RankRequest,
    "/plan": PlanRequest,
    "/batch/submit": BatchSubmitRequest,
    "/batch/status": BatchJobRequest,
    "/batch/result": BatchJobRequest,
}
"""The request body schema of each route that takes one."""
RESPONSE_MODELS: dict[str, type[BaseModel]] = {
    "/predict": PredictResponse,
    "/rank": RankResponse,
    "/plan": PlanResponse,
}
"""The schema of the 200 answer of the scoring routes."""


def _component(model: type[BaseModel], schemas: dict[str, Any], mode: str) -> dict[str, Any]:
    """``model``'s JSON schema with its nested models moved to ``components/schemas`` (OpenAPI 3.0 form)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
    for name, definition in schema.pop("$defs", {}).items():
        schemas[name] = _openapi_30(definition)
    return _openapi_30(schema)


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
    of every optional field), the answers of the scoring routes (:data:`RESPONSE_MODELS`) and, per route, every
    error status it can answer in the one error shape; the success statuses of :data:`ROUTE_SUCCESSES`."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for path, model in REQUEST_MODELS.items():
        operation = spec.get("paths", {}).get(path, {}).get("post")
        schema = _component(model, schemas, "validation")
        if operation is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    for path, model in RESPONSE_MODELS.items():
        operation = spec.get("paths", {}).get(path, {}).get("post")
        schema = _component(model, schemas, "serialization")
        if operation is not None:
            ok = {"description": "Successful Response", "content": {"application/json": {"schema": schema}}}
            operation.setdefault("responses", {})["200"] = ok
    for path, successes in ROUTE_SUCCESSES.items():
        operation = spec.get("paths", {}).get(path, {}).get("post")
        if operation is None:
            continue
        answers = operation.setdefault("responses", {})
        content = answers.get("200", {}).get("content", {"application/json": {"schema": {"type": "object"}}})
        for status, description in successes.items():
            answers[str(status)] = {"description": description, "content": content}
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
                await send_error(send, 500, "the OpenAPI document could not be generated")
                return
            self.document = json.dumps(openapi_document(json.loads(b"".join(chunks)))).encode()
        await send_json(send, 200, self.document)
