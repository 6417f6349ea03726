"""serving.bento_patches against the installed BentoML: every internal a patch relies on is still there, as the
patch expects it (these tests fail loudly on a BentoML upgrade that changes one), the patches do what they claim,
and outside the tested series nothing is patched. That the running service applies them is checked against the
real server in ``tests/integration/test_service_http.py``."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import tomllib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import bentoml
import pytest
from cli_util import REPO
from packaging.requirements import Requirement
from packaging.version import Version
from pydantic import BaseModel, ValidationError

from serving import bento_patches

TIMEOUT_MIDDLEWARE_SHA256 = "4dab3e6bdd06efc590294d89beed9a399be6959b62bce9da024b33292e1be34b"
"""Digest of the source of BentoML's ``TimeoutMiddleware`` class (1.4.40), whose ``__call__`` the patch replaces.
When it changes, compare ``bento_patches._timeout_middleware_call`` with the new ``__call__``, carry any change of
behaviour over, then record the new digest."""


def _timeout_middleware() -> type:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    return TimeoutMiddleware


@pytest.fixture
def unpatched(monkeypatch) -> Iterator[None]:
    """A process where :func:`bento_patches.apply` has not run yet; whatever a test patches is undone after it."""
    from _bentoml_impl.server import app as bentoml_app

    timeout_middleware = _timeout_middleware()
    monkeypatch.setattr(timeout_middleware, "__call__", timeout_middleware.__call__)
    monkeypatch.setattr(bentoml_app, "log_exception", bentoml_app.log_exception)
    monkeypatch.setattr(bento_patches, "_applied", {})
    monkeypatch.setattr(bento_patches, "_in_flight", 0)
    yield


class Service:
    """A class with one BentoML API method, as the service has (the decorator is not needed for binding)."""

    @bentoml.api
    async def predict(self, x: int = 0) -> dict[str, Any]:
        return {"x": x}


def _ignore_client_error(method: str, path: str, status: int, what: str | None) -> None:
    """A client-error logger for tests that do not look at client errors."""


# --- the internals each patch relies on ---------------------------------------------------------------------------


def test_the_installed_bentoml_is_the_tested_series_and_pyproject_bounds_it_to_that_series() -> None:
    installed = bento_patches.bentoml_version()
    assert bento_patches.supported(installed), f"BentoML {installed} is not {bento_patches.TESTED_SERIES}"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (bound,) = [Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "bentoml"]
    major, minor = bento_patches.TESTED_SERIES
    assert Version(installed) in bound.specifier
    assert Version(f"{major}.{minor}.999") in bound.specifier
    assert Version(f"{major}.{minor + 1}.0") not in bound.specifier


def test_timeout_middleware_is_the_one_the_patch_replaces() -> None:
    middleware = _timeout_middleware()
    source = inspect.getsource(middleware)  # from the file: the original, even when the class is patched
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == TIMEOUT_MIDDLEWARE_SHA256, "BentoML's TimeoutMiddleware changed: review the patch (see digest)"
    assert list(inspect.signature(middleware.__init__).parameters) == ["self", "app", "timeout"]
    assert list(inspect.signature(middleware._set_timer_out).parameters) == ["self", "waiter"]
    assert list(inspect.signature(bento_patches._timeout_middleware_call).parameters) == [
        "self",
        "scope",
        "receive",
        "send",
    ]
    from bentoml._internal.server.base_app import BaseAppFactory

    # the app factory installs this very class (by name, imported when the app is built): patching it reaches it
    assert "TimeoutMiddleware" in BaseAppFactory.middlewares.fget.__code__.co_names


def test_log_exception_is_looked_up_by_name_where_bentoml_answers_a_client_error() -> None:
    from _bentoml_impl.server import app as bentoml_app
    from bentoml._internal.server import http_app

    assert list(inspect.signature(http_app.log_exception).parameters) == ["request", "exc_info"]
    assert hasattr(bentoml_app, "log_exception")
    # a global looked up at call time in the handler: replacing the module attribute replaces what it calls
    assert "log_exception" in bentoml_app.ServiceAppFactory.api_endpoint_wrapper.__code__.co_names
    assert issubclass(bentoml.exceptions.BadInput, bentoml.exceptions.BentoMLException)
    assert bentoml.exceptions.BadInput("x").error_code.value == 400  # what client_error_status reads


def test_api_methods_are_non_data_descriptors_looked_up_on_the_instance() -> None:
    from _bentoml_impl.server.app import ServiceAppFactory
    from _bentoml_sdk.method import APIMethod

    assert isinstance(Service.__dict__["predict"], APIMethod)
    assert hasattr(APIMethod, "__get__") and not hasattr(APIMethod, "__set__") and not hasattr(APIMethod, "__delete__")
    assert hasattr(Service().predict, "local")  # what BentoML calls: getattr(instance, name).local
    names = ServiceAppFactory.api_endpoint.__code__.co_names
    assert "_service_instance" in names and "local" in names


def test_workers_are_found_by_their_command_line() -> None:
    from _bentoml_impl.server import serving

    assert serving._SERVICE_WORKER_SCRIPT.startswith(bento_patches.WORKER_MARK)


# --- what the patches do ------------------------------------------------------------------------------------------


def test_apply_patches_every_internal_once_and_binds_the_api_methods(unpatched, caplog) -> None:
    service = Service()
    caplog.set_level(logging.INFO, logger="retention.bento_patches")
    assert bento_patches.apply(service, _ignore_client_error) == dict.fromkeys(bento_patches.PATCHES, True)
    assert _timeout_middleware().__call__ is bento_patches._timeout_middleware_call
    assert service.predict is service.predict and hasattr(service.predict, "local")  # bound once, not per lookup
    assert asyncio.run(service.predict.local(x=3)) == {"x": 3}
    assert f"BentoML {bento_patches.bentoml_version()} internals patched: " in caplog.text
    other = Service()
    assert bento_patches.apply(other, _ignore_client_error) == bento_patches.applied()  # idempotent
    assert "predict" in vars(other) and caplog.text.count("internals patched") == 1
    assert Service().predict is not Service().predict  # without the patch, each lookup builds a wrapper


def _run(coroutine: Any) -> list[asyncio.TimerHandle]:
    """Run ``coroutine`` on a new event loop; returns the timers still pending on the loop when it is done."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coroutine)
        # asyncio's heap of scheduled timers (private, but the only place a pending timer shows)
        return [handle for handle in loop._scheduled if not handle.cancelled()]
    finally:
        loop.close()


def test_the_patched_timeout_middleware_counts_requests_and_cancels_its_timer(unpatched) -> None:
    unpatched_call = _timeout_middleware().__call__
    bento_patches.apply(Service(), _ignore_client_error)
    seen: list[int | None] = []
    sent: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(bento_patches.requests_in_flight())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message: dict) -> None:
        sent.append(message)

    middleware = _timeout_middleware()(app, timeout=30)
    original = _run(unpatched_call(middleware, {"type": "http"}, None, send))
    assert len(original) == 1  # BentoML's own timer stays for `timeout` seconds, holding the request's objects
    sent.clear()
    assert _run(middleware({"type": "http"}, None, send)) == []  # the patched one is cancelled once answered
    assert seen == [0, 1] and bento_patches.requests_in_flight() == 0  # only the patched call counts its request
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_the_patched_timeout_middleware_still_answers_504_when_nothing_starts_in_time(unpatched) -> None:
    bento_patches.apply(Service(), _ignore_client_error)
    sent: list[dict] = []

    async def never(scope: dict, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()

    async def send(message: dict) -> None:
        sent.append(message)

    _run(_timeout_middleware()(never, timeout=0.01)({"type": "http"}, None, send))
    assert sent[0]["status"] == 504 and b"Not able to process the request in 0.01 seconds" in sent[1]["body"]
    assert bento_patches.requests_in_flight() == 0


class _Body(BaseModel):
    amount: float


def test_client_errors_are_one_call_of_the_logger_and_server_errors_keep_bentoml_s_traceback(
    unpatched, monkeypatch
) -> None:
    from _bentoml_impl.server import app as bentoml_app

    server_errors: list[Any] = []
    monkeypatch.setattr(bentoml_app, "log_exception", lambda request, exc_info=True: server_errors.append(request))
    client_errors: list[tuple] = []
    bento_patches.apply(Service(), lambda *args: client_errors.append(args))
    request = SimpleNamespace(method="POST", url=SimpleNamespace(path="/predict"))
    try:
        _Body.model_validate({"amount": "CLIENT-DATA"})
    except ValidationError:
        bentoml_app.log_exception(request)
    try:
        raise bentoml.exceptions.BadInput("bad")
    except bentoml.exceptions.BentoMLException:
        bentoml_app.log_exception(request)
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        bentoml_app.log_exception(request)
    assert client_errors == [
        ("POST", "/predict", 400, "1 schema problem(s), first float_parsing"),
        ("POST", "/predict", 400, None),
    ]
    assert server_errors == [request]


def test_outside_the_tested_series_nothing_is_patched_and_a_warning_says_so(unpatched, monkeypatch, caplog) -> None:
    from _bentoml_impl.server import app as bentoml_app

    original_call, original_log = _timeout_middleware().__call__, bentoml_app.log_exception
    monkeypatch.setattr(bento_patches, "bentoml_version", lambda: "1.5.0")
    service = Service()
    assert bento_patches.apply(service, _ignore_client_error) == dict.fromkeys(bento_patches.PATCHES, False)
    assert _timeout_middleware().__call__ is original_call and bentoml_app.log_exception is original_log
    assert "predict" not in vars(service) and bento_patches.requests_in_flight() is None
    warning = [r for r in caplog.records if r.name == "retention.bento_patches" and r.levelno == logging.WARNING]
    assert len(warning) == 1 and "BentoML 1.5.0 is not the tested series 1.4.x" in warning[0].getMessage()
    assert "bentoml>=1.4,<1.5" in warning[0].getMessage()


@pytest.mark.parametrize(
    ("version", "supported"), [("1.4.39", True), ("1.4.40", True), ("1.5.0", False), ("1.3.9", False), ("x", False)]
)
def test_the_version_guard(version: str, supported: bool) -> None:
    assert bento_patches.supported(version) is supported
