"""A real server (``retention serve`` in a subprocess) on a hand-made bundle: a champion that cannot load leaves the
service up and saying why, a damaged reload keeps the old version and its worker, SIGHUP to the printed main PID
reloads, and the batch CLI refuses a damaged model in one sentence."""

from __future__ import annotations

import os
import shutil
import signal
import time
import types
from pathlib import Path

from model_util import abort_lightgbm, make_model
from server_util import ADMIN, start_server, stop

from serving.model import CHURN_FILE, MANIFEST_FILE, ScoringModel


def _server_helpers():
    return start_server, stop, ADMIN


def _wait(check, seconds: float = 90.0):
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def _worker_pids(server) -> list[int]:
    from serving.supervise import worker_pids

    return worker_pids(server.proc.pid)


def served_bundle(tmp_path: Path, version: str, model: ScoringModel | None = None) -> Path:
    folder = (model or make_model()).save(tmp_path / "served")
    (folder / "VERSION").write_text(version)
    return folder


def test_a_champion_that_cannot_load_leaves_the_service_up_and_saying_why(tmp_path) -> None:
    start_server, stop, _ = _server_helpers()
    folder = served_bundle(tmp_path, "7")
    (folder / MANIFEST_FILE).unlink()
    abort_lightgbm(folder / CHURN_FILE)
    workspace = types.SimpleNamespace(env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}, root=tmp_path)
    s = start_server(workspace, None, str(folder), wait_ready=False)
    try:
        assert _wait(lambda: "crashed" in s.get("/readyz").text), s.get("/readyz").text
        ready = s.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == 503
        assert (
            "failed to load" in ready.json()["error"] and "crashed the process that loaded it" in ready.json()["error"]
        )
        workers = _worker_pids(s)
        assert len(workers) == 1
        assert s.get("/livez").status_code == 200
        predict = s.post("/predict", {"customers": [{"customer_id": "a"}]})
        assert predict.status_code == 503 and "crashed the process that loaded it" in predict.json()["error"]
        assert s.post("/model", {}).status_code == 503
        assert _worker_pids(s) == workers  # the worker never died
        # the fixed version loads on SIGHUP to the main PID, in the same worker
        served_bundle(tmp_path, "8")
        s.proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: s.get("/readyz").status_code == 200)
        assert s.post("/model", {}).json()["model_version"] == "8"
        assert _worker_pids(s) == workers
    finally:
        stop(s)


def test_a_damaged_reload_keeps_the_old_version_and_the_worker(tmp_path) -> None:
    start_server, stop, admin = _server_helpers()
    folder = served_bundle(tmp_path, "1")
    workspace = types.SimpleNamespace(env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}, root=tmp_path)
    s = start_server(workspace, None, str(folder))
    try:
        workers = _worker_pids(s)
        abort_lightgbm(folder / CHURN_FILE)  # digest mismatch: refused before any parse
        (folder / "VERSION").write_text("2")
        reload = s.post("/admin/reload", {}, headers=admin)
        assert reload.status_code == 409 and "churn.txt does not match its sha256" in reload.json()["error"]
        (folder / MANIFEST_FILE).unlink()  # no digests: the child check takes the crash
        reload = s.post("/admin/reload", {}, headers=admin)
        assert reload.status_code == 409 and "crashed the process that loaded it" in reload.json()["error"]
        s.proc.send_signal(signal.SIGHUP)  # the same through SIGHUP to the printed main PID
        assert _wait(lambda: "SIGHUP: reloading the model in worker PID" in _log(tmp_path, s))
        assert s.post("/model", {}).json()["model_version"] == "1"
        body = s.post("/predict", {"customers": [{"customer_id": "nobody"}]})
        assert body.status_code == 200 and body.json()["model_version"] == "1"
        assert s.get("/readyz").status_code == 200
        assert _worker_pids(s) == workers
    finally:
        stop(s)


def _log(root: Path, server) -> str:
    port = server.base.rsplit(":", 1)[1]
    return (root / f"server-{port}.log").read_text(errors="replace")


def test_retention_serve_prints_the_main_pid_that_reloads(tmp_path) -> None:
    start_server, stop, _ = _server_helpers()
    folder = served_bundle(tmp_path, "1")
    workspace = types.SimpleNamespace(env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}, root=tmp_path)
    s = start_server(workspace, None, str(folder))
    try:
        assert f"main PID {s.proc.pid} (kill -HUP {s.proc.pid} reloads the model" in _log(tmp_path, s)
        workers = _worker_pids(s)
        shutil.rmtree(folder)
        served_bundle(tmp_path, "2")
        os.kill(s.proc.pid, signal.SIGHUP)
        assert _wait(lambda: s.post("/model", {}).json().get("model_version") == "2")
        assert _worker_pids(s) == workers  # reloaded in place: no worker restart
    finally:
        stop(s)


def test_the_batch_cli_refuses_a_damaged_model_in_one_sentence(tmp_path) -> None:
    from cli_util import run_cli

    bundle = make_model().save(tmp_path / "bundle")
    (bundle / MANIFEST_FILE).unlink()
    abort_lightgbm(bundle / CHURN_FILE)
    out = tmp_path / "scores.parquet"
    args = ["score", "-t", str(tmp_path / "none.csv"), "--as-of", "2024-12-30", "--out", str(out), "--no-record"]
    result = run_cli(*args, "--model", str(bundle))
    assert result.returncode == 2, result.stderr
    assert "crashed the process that loaded it" in result.stderr and not out.exists()
