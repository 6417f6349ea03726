"""Two BentoML workers over real HTTP (``RETENTION_WORKERS=2``): requests reach both, and a reload (``POST
/admin/reload`` on whichever worker answers, or ``SIGHUP`` to ``retention serve``'s main PID) brings every worker to
the new champion version, after which no response carries the old one."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest
from server_util import ADMIN, Server, start_server, stop

NAME = "retention-workers"  # its own registered model: the workspace's shared champion is left alone
WAIT_SECONDS = 120.0


@pytest.fixture(scope="module")
def register(workspace) -> Callable[[], str]:
    """Registers a new version of :data:`NAME` (the workspace champion's bundle) and makes it the champion."""
    import mlflow
    import pandas as pd

    from serving.loader import load_model
    from training import registry

    os.environ["MLFLOW_TRACKING_URI"] = workspace.tracking_uri
    model = load_model("models:/retention@champion")
    example = pd.DataFrame(0.0, index=range(5), columns=list(model.feature_columns))

    def promote() -> str:
        mlflow.set_experiment("workers-test")
        with mlflow.start_run():
            version = registry.log_bundle(model, NAME, example)
        registry.set_alias(NAME, registry.CHAMPION, version)
        return version

    return promote


@pytest.fixture(scope="module")
def two_workers(workspace, register) -> Iterator[tuple[Server, str]]:
    first = register()
    server = start_server(workspace, None, f"models:/{NAME}@champion", {"RETENTION_WORKERS": "2"})
    try:
        yield server, first
    finally:
        stop(server)


def _versions_by_worker(server: Server, version: str) -> dict[int, str]:
    """Ask ``/model`` until both workers answered ``version`` (bounded); each worker's last answered version."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        body = server.post("/model", {}).json()
        seen[body["worker_pid"]] = body["model_version"]
        if len(seen) == 2 and set(seen.values()) == {version}:
            break
    return seen


def _assert_only(server: Server, version: str, requests: int = 60) -> None:
    """Every one of ``requests`` responses (predictions and model info, from whichever worker) carries ``version``."""
    for _ in range(requests):
        assert server.post("/predict", {"customers": [{"customer_id": "nobody"}]}).json()["model_version"] == version
        assert server.post("/model", {}).json()["model_version"] == version


def test_requests_reach_both_workers_with_one_version(two_workers) -> None:
    from serving.supervise import worker_pids

    server, first = two_workers
    seen = _versions_by_worker(server, first)
    assert set(seen) == set(worker_pids(server.proc.pid)) and len(seen) == 2
    _assert_only(server, first)


def test_admin_reload_reaches_every_worker(two_workers, register) -> None:
    server, _ = two_workers
    second = register()
    reload = server.post("/admin/reload", {}, headers=ADMIN)
    assert reload.status_code == 200, reload.text
    body = reload.json()
    assert body["model_version"] == second and body["all_workers"] is True, body
    assert {w["version"] for w in body["workers"].values()} == {second} and len(body["workers"]) == 2
    assert set(_versions_by_worker(server, second).values()) == {second}
    _assert_only(server, second)
    assert server.get("/readyz").status_code == 200


def test_sighup_to_the_serve_pid_reaches_every_worker(two_workers, register) -> None:
    server, _ = two_workers
    third = register()
    os.kill(server.proc.pid, signal.SIGHUP)
    seen = _versions_by_worker(server, third)
    assert len(seen) == 2 and set(seen.values()) == {third}, seen
    _assert_only(server, third)
