"""Every reliance of the service on BentoML internals, in one module, behind one version guard.

The service changes three things BentoML does not let it configure; each keeps a gain measured in
``benchmarks/bench_service.py`` (``benchmarks/results/service.md``):

- ``timeout_timer``: BentoML's ``TimeoutMiddleware.__call__`` (``bentoml._internal.server.http.traffic``) is
  replaced by :func:`_timeout_middleware_call`: the same 504 after ``traffic.timeout`` seconds, but the timer is
  cancelled when the request is done and does not capture the request's context (the original kept every
  request's objects alive for ``timeout`` seconds, which set off full GC collections of the heap: 100-800 ms
  pauses), and it counts the requests in flight (:func:`requests_in_flight`).
- ``client_errors``: ``_bentoml_impl.server.app.log_exception`` is wrapped so that a request BentoML rejects as a
  client error (schema, invalid JSON) is one call to the service's logger instead of an ERROR with a traceback
  carrying the client's data; server errors keep BentoML's own ERROR and traceback.
- ``bound_api_methods``: each ``@bentoml.api`` method (``_bentoml_sdk.method.APIMethod``) of the service instance
  is bound once: BentoML's descriptor builds a new wrapper (``inspect.signature``, ``functools.wraps``) on every
  request, 23 us against 0.2 us.

The service also finds BentoML's worker processes by their command line (:data:`WORKER_MARK`, used by
:mod:`serving.supervise`).

These internals are those of the tested BentoML series :data:`TESTED_SERIES` (the bound in ``pyproject.toml``).
With another version :func:`apply` patches nothing and logs one warning: the service works with BentoML's own
behaviour (the GC pauses above, a traceback per client error, no in-flight count, so every request is scored in
the thread pool). ``tests/test_bento_patches.py`` asserts that every internal used here still exists with the
expected signature, so an upgrade inside the series that changes one fails loudly there.

Importing this module imports nothing from BentoML and changes nothing: :func:`apply`, called once from the
service's ``__init__``, does it all.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.metadata
import json
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "PATCHES",
    "TESTED_SERIES",
    "WORKER_MARK",
    "ClientErrorLogger",
    "applied",
    "apply",
    "bentoml_version",
    "client_error_status",
    "requests_in_flight",
    "supported",
]

log = logging.getLogger("retention.bento_patches")
TESTED_SERIES = (1, 4)
"""The BentoML ``(major, minor)`` series whose internals the patches are written and tested against."""
PATCHES = ("timeout_timer", "client_errors", "bound_api_methods")
"""The names of the patches, in the order :func:`apply` applies them."""
WORKER_MARK = "_bentoml_impl.worker"
"""Part of the command line of a BentoML 1.4 worker process (``_bentoml_impl.server.serving``'s worker script)."""

ClientErrorLogger = Callable[[str, str, int, str | None], None]
"""``(method, path, status, what)``: logs one client error (``what``: the error types, never client data)."""

_EMPTY_CONTEXT = contextvars.Context()
_lock = threading.Lock()
_applied: dict[str, bool] = {}  # patch name -> applied, filled by apply()
_in_flight = 0  # requests this worker is answering (counted on the event loop by the patched middleware)


def bentoml_version() -> str:
    """The installed BentoML version (``importlib.metadata``; BentoML itself is not imported)."""
    return importlib.metadata.version("bentoml")


def supported(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed one) is in :data:`TESTED_SERIES`."""
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(version or bentoml_version()).release
    except InvalidVersion:
        return False
    return release[:2] == TESTED_SERIES


def apply(service: Any, on_client_error: ClientErrorLogger) -> dict[str, bool]:
    """Apply every patch once per process (the API methods are bound on ``service``, the instance, every time);
    returns which patches are applied. Outside :data:`TESTED_SERIES` nothing is patched and one warning is logged.

    ``on_client_error`` is called for each request BentoML rejects with a 4xx (see the module docstring).
    """
    with _lock:
        if not _applied:
            if log.level == logging.NOTSET:  # BentoML sets the root logger to WARNING: keep the one INFO line
                log.setLevel(logging.INFO)
            version = bentoml_version()
            if supported(version):
                _applied["timeout_timer"] = _patch_timeout_middleware()
                _applied["client_errors"] = _patch_log_exception(on_client_error)
                _applied["bound_api_methods"] = True
                done = [name for name in PATCHES if _applied[name]]
                log.info("BentoML %s internals patched: %s", version, ", ".join(done) or "none")
            else:
                _applied.update(dict.fromkeys(PATCHES, False))
                major, minor = TESTED_SERIES
                log.warning(
                    "BentoML %s is not the tested series %s: its internals are left unpatched (the service works,"
                    " with BentoML's GC pauses and a traceback per client error); install %s",
                    version,
                    f"{major}.{minor}.x",
                    f"bentoml>={major}.{minor},<{major}.{minor + 1}",
                )
        if _applied["bound_api_methods"]:
            _bind_api_methods(service)
        return dict(_applied)


def applied() -> dict[str, bool]:
    """Which patches :func:`apply` applied in this process (empty before it ran)."""
    return dict(_applied)


def requests_in_flight() -> int | None:
    """Requests this worker is answering now (the caller's included), or None when they are not counted (the
    timeout middleware is not patched)."""
    return _in_flight if _applied.get("timeout_timer") else None


# ------------------------------------------------------------------------------------------ timeout_timer


def _patch_timeout_middleware() -> bool:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    if not hasattr(TimeoutMiddleware, "_set_timer_out"):
        log.warning("BentoML's TimeoutMiddleware changed: its per-request timer is not patched")
        return False
    TimeoutMiddleware.__call__ = _timeout_middleware_call  # type: ignore[method-assign]
    return True


async def _timeout_middleware_call(self: Any, scope: dict, receive: Any, send: Any) -> None:
    """BentoML's ``TimeoutMiddleware.__call__`` (504 when no response has started within ``self.timeout``
    seconds), except that the timer is cancelled once the request is done and does not capture the request's
    context; counts the requests in flight from when uvicorn dispatches the request (every request passes here
    before any endpoint runs) until its response body is complete."""
    global _in_flight
    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter, context=_EMPTY_CONTEXT)
    _in_flight += 1
    counted = True

    async def _send(message: Any) -> None:
        global _in_flight
        nonlocal counted
        if not waiter.done():
            waiter.set_result(None)
        if counted and message.get("type") == "http.response.body" and not message.get("more_body", False):
            _in_flight -= 1  # answered: the client may send its next request before this task ends
            counted = False
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                from starlette.responses import JSONResponse

                response = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504
                )
                await response(scope, receive, send)
        else:
            await fut
    finally:
        timer.cancel()
        if counted:
            _in_flight -= 1


# ------------------------------------------------------------------------------------------ client_errors


def client_error_status(exc: BaseException | None) -> int | None:
    """The 4xx status BentoML answers ``exc`` with, or None for a server error."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError | json.JSONDecodeError | UnicodeDecodeError):
        return 400
    code = getattr(getattr(exc, "error_code", None), "value", None)
    return code if isinstance(code, int) and 400 <= code < 500 else None


def _patch_log_exception(on_client_error: ClientErrorLogger) -> bool:
    from _bentoml_impl.server import app as bentoml_app

    original = getattr(bentoml_app, "log_exception", None)
    if original is None:
        log.warning("BentoML's server app has no log_exception: client errors keep their tracebacks")
        return False

    def log_exception(request: Any, exc_info: Any = True) -> None:
        exc = sys.exc_info()[1]
        status = client_error_status(exc)
        if status is None:
            original(request, exc_info)
            return
        problems = exc.errors() if hasattr(exc, "errors") and hasattr(exc, "error_count") else None
        what = f"{len(problems)} schema problem(s), first {problems[0]['type']}" if problems else None
        on_client_error(request.method, request.url.path, status, what)  # error types only: no client field names

    bentoml_app.log_exception = log_exception
    return True


# -------------------------------------------------------------------------------------- bound_api_methods


def _bind_api_methods(service: Any) -> None:
    """Bind each ``@bentoml.api`` method of ``service`` once: BentoML looks the endpoint up with
    ``getattr(instance, name)`` per request, and ``APIMethod`` has no ``__set__``, so an instance attribute of the
    same name answers first."""
    from _bentoml_sdk.method import APIMethod

    cls = type(service)
    for name in dir(cls):
        method = getattr(cls, name, None)
        if isinstance(method, APIMethod):
            setattr(service, name, method.__get__(service, cls))
