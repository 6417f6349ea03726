"""Several BentoML workers over real HTTP (``RETENTION_WORKERS``, :mod:`serving.reload`).

- Regression (the first multi-worker design never turned ready here): a server given a local model directory with
  no ``VERSION`` file, with 1 and with 2 workers, becomes ready and answers ``/predict`` from every worker.
- Two workers on a registry alias: requests reach both with one version, and a reload (``POST /admin/reload`` on
  whichever worker answers, or ``SIGHUP`` to ``retention serve``'s main PID) brings every worker to the new
  champion version, after which no response carries the old one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_util import ADMIN, Server, start_server, stop

NAME = "retention-workers"  # its own registered model: the workspace's shared champion is left alone
WAIT_SECONDS = 120.0
SCORED = {
    "customers": [{"customer_id": "a", "transactions": [{"timestamp": "2024-11-02", "amount": 25.0}]}],
    "as_of": "2024-12-30",
}
"""One customer with inline transactions: a real score without an online store."""


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow calls of this process go to ``uri``, even when an earlier test set another URI with
    ``mlflow.set_tracking_uri``; afterwards none is set and ``MLFLOW_TRACKING_URI`` is what it was."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # unsets it, and the variable
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="module")
def local_bundle(workspace, tmp_path_factory) -> Path:
    """The workspace champion saved as a local model directory, without a ``VERSION`` file (version null)."""
    from serving.loader import load_model

    with tracking(workspace.tracking_uri):
        model = load_model("models:/retention@champion")
    path = model.save(tmp_path_factory.mktemp("workers") / "bundle")
    assert not (path / "VERSION").exists()
    return path


def _answers_by_worker(server: Server, workers: int, done: Callable[[dict[int, dict]], bool]) -> dict[int, dict]:
    """Ask ``/model`` until ``workers`` worker PIDs answered and ``done`` holds for their last answers (bounded)."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        response = server.post("/model", {})
        assert response.status_code == 200, response.text  # the server is ready: every worker has a model
        body = response.json()
        seen[body["worker_pid"]] = body
        if len(seen) == workers and done(seen):
            break
    return seen


@pytest.mark.parametrize("workers", [1, 2])
def test_a_local_model_directory_serves_from_every_worker(workspace, local_bundle, workers: int) -> None:
    from serving.supervise import worker_pids

    server = start_server(workspace, None, str(local_bundle), {"RETENTION_WORKERS": str(workers)})  # waits for 200
    try:
        assert server.get("/readyz").status_code == 200
        seen = _answers_by_worker(server, workers, lambda answers: True)
        assert set(seen) == set(worker_pids(server.proc.pid)) and len(seen) == workers
        assert {(a["model_version"], a["reload_generation"]) for a in seen.values()} == {(None, 1)}
        for _ in range(4 * workers):  # whichever worker answers: scored, by the one model
            response = server.post("/predict", SCORED)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model_version"] is None and 0.0 <= body["predictions"][0]["churn_probability"] <= 1.0
    finally:
        stop(server)


@pytest.fixture(scope="module")
def register(workspace) -> Callable[[], str]:
    """Registers a new version of :data:`NAME` (the workspace champion's bundle) and makes it the champion."""
    import mlflow
    import pandas as pd

    from serving.loader import load_model
    from training import registry

    with tracking(workspace.tracking_uri):
        model = load_model("models:/retention@champion")
    example = pd.DataFrame(0.0, index=range(5), columns=list(model.feature_columns))

    def promote() -> str:
        with tracking(workspace.tracking_uri):  # the servers' registry (they get workspace.env)
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
    """Each worker's last answered version on ``/model``, once both answered ``version`` (bounded)."""
    seen = _answers_by_worker(server, 2, lambda answers: {a["model_version"] for a in answers.values()} == {version})
    return {pid: answer["model_version"] for pid, answer in seen.items()}


def _assert_only(server: Server, version: str, requests: int = 40) -> None:
    """Every one of ``requests`` responses (predictions and model info, from whichever worker) carries ``version``."""
    for _ in range(requests):
        assert server.post("/predict", SCORED).json()["model_version"] == version
        assert server.post("/model", {}).json()["model_version"] == version


def test_requests_reach_both_workers_with_one_version(two_workers) -> None:
    from serving.supervise import worker_pids

    server, first = two_workers
    seen = _versions_by_worker(server, first)
    assert set(seen) == set(worker_pids(server.proc.pid)) and set(seen.values()) == {first}
    _assert_only(server, first)


def test_admin_reload_reaches_every_worker(two_workers, register) -> None:
    server, _ = two_workers
    second = register()
    reload = server.post("/admin/reload", {}, headers=ADMIN)
    assert reload.status_code == 200, reload.text
    body = reload.json()
    assert body["model_version"] == second and body["all_workers"] is True, body
    assert [(w["generation"], w["loaded"], w["version"]) for w in body["workers"]] == [
        (body["reload_generation"], True, second)
    ] * 2
    assert set(_versions_by_worker(server, second).values()) == {second}
    _assert_only(server, second)
    assert server.get("/readyz").status_code == 200


def test_sighup_to_the_serve_pid_reaches_every_worker(two_workers, register) -> None:
    server, _ = two_workers
    third = register()
    os.kill(server.proc.pid, signal.SIGHUP)
    seen = _versions_by_worker(server, third)
    assert set(seen.values()) == {third}, seen
    _assert_only(server, third)
