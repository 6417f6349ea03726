"""The BentoML service for CRM calls: ``/predict``, ``/rank``, ``/model`` and ``/admin/reload``. Thin: scoring is
in :mod:`serving.online`, the HTTP around it in one module per concern, wired at the bottom of this one:

- :mod:`serving.schemas`: the request bodies; :mod:`serving.openapi`: the document at ``/docs.json``;
- :mod:`serving.guard`: API key, admin key, JSON bodies only, body size limit (401/403/415/413);
- :mod:`serving.http_errors`: the one JSON error shape of every error answer, and its log line;
- :mod:`serving.readiness`: ``/readyz`` (503 with the reason, or 200 ``degraded`` while the store is down);
- :mod:`serving.reload`: one model version in every worker (``RETENTION_WORKERS``), at start-up and on reload;
- :mod:`serving.store_access`: the online store, opened without ever stopping the start-up;
- :mod:`serving.tuning`: the worker's start-up tuning for the latency tail (:mod:`serving.bento_patches`).

Start with ``retention serve`` (or ``bentoml serve serving.service:Retention``). The model loads in the
background at start-up, so ``/readyz`` answers 503 until it is loaded and 200 after. When
``RETENTION_API_KEY`` is set every route but health, metrics and docs needs it (``Authorization: Bearer KEY``
or ``X-API-Key: KEY``) and answers 401 without it. ``/admin/reload`` also needs
``X-Admin-Key: RETENTION_ADMIN_KEY`` (403 without it, and to everyone when no admin key is set). ``SIGHUP`` or
``POST /admin/reload`` reloads the model
reference (e.g. a new ``champion``) in every worker (all serve one version, see :mod:`serving.reload`); a version
that fails to load leaves the old one serving. Every version is
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
- The tail: :func:`~serving.tuning.tune_runtime` fixes BentoML's per-request timeout timer (which set off full GC
  collections: 100-800 ms pauses) and freezes the start-up heap; access logging is off (``RETENTION_ACCESS_LOG=1``
  turns it back on); ``/metrics`` stays.

Configuration comes from :func:`retention.settings.get_settings` (``RETENTION_*`` variables): what BentoML's
decorator needs (threads, access log, tracing) is read when this module is imported, the rest when the service
starts. The default online store is the SQLite file under ``RETENTION_HOME``, where ``retention materialize``
writes by default; until it exists, customers sent by id are answered "unknown customer_id".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import bentoml
from pydantic import Field
from starlette.responses import Response

from retention.settings import Settings, get_settings
from serving import bento_patches, readiness
from serving.batch_tasks import BatchTasks, TaskError, submit_status
from serving.bento import default_model_reference
from serving.coalesce import RequestCoalescer
from serving.economics import economics_of_settings
from serving.guard import GuardMiddleware
from serving.http_errors import ErrorShapeMiddleware, configure_logging, error_response, log_client_error
from serving.online import Limits, ModelHolder, OnlineAnswer, OnlineScorer, RequestError, check_top_k
from serving.openapi import OpenAPIMiddleware
from serving.readiness import ReadinessMiddleware, StoreReadinessMiddleware, not_ready_reason
from serving.reload import FOLLOW_SECONDS, ReloadChannel, all_on, worker_list
from serving.responses import json_response
from serving.schemas import (
    BatchJobRequest,
    BatchSubmitRequest,
    Customer,
    EconomicsOverrides,
    OfferSpec,
    PlanRequest,
    PredictRequest,
    RankRequest,
)
from serving.scorecard import weights_of_settings
from serving.store import StoreUnavailable
from serving.store_access import open_service_store
from serving.tuning import freeze_heap, tune_runtime

log = logging.getLogger("retention.service")
INLINE_MAX_CUSTOMERS = 16
INLINE_MAX_TRANSACTIONS = 500
API_ROUTES = (
    "/predict",
    "/rank",
    "/plan",
    "/admin/reload",
    "/model",
    "/batch/submit",
    "/batch/status",
    "/batch/result",
)


def service_config(settings: Settings) -> dict[str, Any]:
    """The BentoML service configuration for ``settings`` (the ``@bentoml.service`` decorator's arguments).

    BentoML's own thread pool gets ``scoring_threads`` threads (at least 1); the service's endpoints are
    ``async`` and score in a pool of their own (see :class:`Retention`).
    """
    return {
        "traffic": {"timeout": 30, "max_concurrency": 256},  # timeout in seconds (504 after it)
        "workers": settings.workers or "cpu_count",  # a reload reaches every worker: see serving.reload
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


@bentoml.service(name="retention", **SERVICE_CONFIG)
class Retention:
    """Churn probability, expected value, value at risk, tier, segment and reasons per customer."""

    def __init__(self) -> None:
        """Start the service from :func:`get_settings`: model reference, online store, request limits, economics
        (``RETENTION_ECONOMICS``: a bad file stops the start with its one-sentence reason) and ``scoring_threads``
        scoring threads (0: every request is scored on the event loop)."""
        settings = get_settings()
        configure_logging(settings)
        self.holder = ModelHolder(default_model_reference(settings), on_loaded=freeze_heap)
        store = open_service_store(settings)
        self.reloads = ReloadChannel.for_this_worker(self.holder)  # one model version in every worker
        readiness.watch(self.holder, store, self.reloads)
        self.scorer = OnlineScorer(
            self.holder,
            store,
            Limits.from_env(),
            economics_of_settings(settings),
            scorecard_weights=weights_of_settings(settings),
        )
        self.batch_tasks = BatchTasks(settings)  # /batch/*: jobs of serving.batch.run_score_job (serving.batch_tasks)
        threads = settings.scoring_threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="retention-score") if threads > 0 else None
        self._coalescer = RequestCoalescer(self.scorer, self._pool) if self._pool is not None else None
        tune_runtime(self)
        self.reloads.start()  # in the background: loads the version every worker serves, then follows reloads
        with contextlib.suppress(ValueError):  # not the main thread (in-process tests): reload by admin call only
            signal.signal(signal.SIGHUP, lambda *_: self.reloads.reload_in_background())

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
        """The JSON answer of ``/predict`` (or ``/rank`` when ``ranked``), or an error answer in the one shape."""
        if not self.scorer.ready:
            return error_response(503, not_ready_reason(self.holder))
        try:
            if ranked:
                check_top_k(top_k)
            answer = await self._predict(customers, as_of)
        except StoreUnavailable as exc:  # by-id customers need the online store: 503 naming it, no traceback
            log.warning("%s", exc)
            return error_response(503, str(exc))
        except RequestError as exc:  # answered here: BentoML would log a traceback for each client error
            log_client_error("POST", "/rank" if ranked else "/predict", exc.status, exc.field)
            return error_response(exc.status, str(exc), exc.field)
        return json_response(answer.rank_body(top_k) if ranked else answer.predict_body())

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

    @bentoml.api(route="/plan", input_spec=PlanRequest)
    async def plan(
        self,
        customers: Annotated[list[Customer], Field(min_length=1)],
        budget: Annotated[float, Field(ge=0)],
        as_of: str | None = None,
        offers: list[OfferSpec] | None = None,
        economics: EconomicsOverrides | None = None,
    ) -> dict[str, Any]:
        """Whom to contact with which offer within ``budget``: the customers scored as by ``/predict``, then
        :func:`serving.plan.make_plan` (:meth:`serving.online.OnlineScorer.plan`); plan rows, totals, budget curve."""
        if not self.scorer.ready:
            return error_response(503, not_ready_reason(self.holder))
        payload = [c.model_dump(exclude_none=True) for c in customers]
        args = (
            payload,
            budget,
            [o.model_dump() for o in offers or ()],
            economics.model_dump(exclude_none=True) if economics is not None else None,
            as_of,
        )
        try:
            if self._on_loop(payload):
                body = self.scorer.plan(*args)
            else:
                body = await asyncio.get_running_loop().run_in_executor(self._pool, self.scorer.plan, *args)
        except StoreUnavailable as exc:
            log.warning("%s", exc)
            return error_response(503, str(exc))
        except RequestError as exc:
            log_client_error("POST", "/plan", exc.status, exc.field)
            return error_response(exc.status, str(exc), exc.field)
        return json_response(body)

    @bentoml.api(route="/admin/reload")
    async def reload(self) -> dict[str, Any]:
        """Reload the model reference now in this worker, then in every other one (the same version: see
        :mod:`serving.reload`); answers once all have it (or after ``FOLLOW_SECONDS``) with each worker's version.
        On failure here every worker keeps its version and the error is returned."""
        previous = self.holder.model.version if self.holder.model else None
        try:
            model, generation = await asyncio.to_thread(self.reloads.reload)  # a download: never on the event loop
        except Exception as exc:
            log.warning("reload of %s failed, version %s keeps serving: %s", self.holder.reference, previous, exc)
            return error_response(409, f"reload failed, version {previous} keeps serving: {exc}")
        workers = await self.reloads.wait_for_workers(generation)
        return json_response(
            {
                "model_version": model.version,
                "previous_version": previous,
                "reload_generation": generation,
                "all_workers": all_on(workers, generation),
                "workers": worker_list(workers),
                "follow_timeout_s": FOLLOW_SECONDS,
            }
        )

    @bentoml.api(route="/model")
    async def model_info(self) -> dict[str, Any]:
        """Which model answers: version, horizon, training as-of date, tiers."""
        if self.holder.model is None:
            return error_response(503, not_ready_reason(self.holder))
        return json_response({**self.holder.model.describe(), **self.reloads.describe()})

    async def _task_answer(self, route: str, call: Any, *args: Any, status: Any = None) -> Response:
        """A ``/batch/*`` answer: ``call(*args)`` off the event loop (file I/O) with the HTTP status ``status(answer)``
        (default 200), or its refusal in the one shape."""
        try:
            answer = await asyncio.to_thread(call, *args)
        except TaskError as exc:
            log_client_error("POST", route, exc.status, exc.field)
            return error_response(exc.status, str(exc), exc.field)
        response = json_response(answer)
        response.status_code = status(answer) if status is not None else 200
        return response

    @bentoml.api(route="/batch/submit", input_spec=BatchSubmitRequest)
    async def batch_submit(
        self,
        source: str,
        as_of: str,
        destination: str | None = None,
        top_k: int | None = None,
        reasons: str | None = None,
    ) -> dict[str, Any]:
        """Start a batch scoring job (``retention score``'s) on files under ``RETENTION_BATCH_ROOT``: its record
        at once (``job_id``, ``status``), 202 while it runs, 200 once done; the same submission again answers the
        same job, never a second run."""
        model = self.holder.model
        if model is None:
            return error_response(503, not_ready_reason(self.holder))
        args = (model, source, as_of, destination, top_k, reasons)
        return await self._task_answer("/batch/submit", self.batch_tasks.submit, *args, status=submit_status)

    @bentoml.api(route="/batch/status", input_spec=BatchJobRequest)
    async def batch_status(self, job_id: str) -> dict[str, Any]:
        """A batch job's status and progress: partitions done of the total, input rows done, why it failed."""
        return await self._task_answer("/batch/status", self.batch_tasks.status, job_id)

    @bentoml.api(route="/batch/result", input_spec=BatchJobRequest)
    async def batch_result(self, job_id: str) -> dict[str, Any]:
        """A finished batch job's output location and run summary (rows, Pareto share, tiers, drift, data quality)."""
        return await self._task_answer("/batch/result", self.batch_tasks.result, job_id)


# the first added is the outermost: ErrorShapeMiddleware sees the answers of all the others
Retention.add_asgi_middleware(ErrorShapeMiddleware, routes=API_ROUTES)
Retention.add_asgi_middleware(GuardMiddleware)
Retention.add_asgi_middleware(ReadinessMiddleware)
Retention.add_asgi_middleware(StoreReadinessMiddleware)
Retention.add_asgi_middleware(OpenAPIMiddleware)
